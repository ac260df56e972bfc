//! Authentication, bans, the connect-rate limit and ACLs against the real broker binary, in MQTT
//! 5.0 and 3.1.1 (issue 4). Accounts, rules and bans are made with the admin command line
//! (`mqtt5-broker --db FILE user add|acl add|ban ...`) on the database file the broker then runs
//! on — before the start, or while it runs (the change must reach it without a restart).
//!
//! Every behaviour is one function taking the protocol version, run as two tests
//! (`<behaviour>::v5` and `<behaviour>::v311`); names carry the spec section:
//! - CONNECT (5.0 §3.1.3.5 User Name, §3.1.3.6 Password, §3.2.2.2 Connect Reason Code; 3.1.1
//!   §3.1.3.4/§3.1.3.5, §3.2.2.3 return code): right password → 0; wrong password or unknown user
//!   → 0x86 / 4; no credentials with anonymous off → 0x87 / 5; banned → 0x8A / 5; connect rate
//!   → 0x9F / 3 (Server unavailable: 3.1.1 has no closer code). A refusal has Session Present 0
//!   (MQTT-3.2.2-6 / 3.1.1 MQTT-3.2.2-4) and closes the connection (MQTT-3.2.2-7 / -5).
//! - PUBLISH (§3.3.4, §3.4.2.1 / 3.1.1 §3.3.5, MQTT-3.3.5-2): denied → PUBACK/PUBREC 0x87 (5.0), a
//!   plain acknowledgement and no delivery (3.1.1).
//! - SUBSCRIBE (§3.9.3 / 3.1.1 §3.9.3): denied filter → 0x87 (5.0) / 0x80 (3.1.1).
//!
//! Raw sockets (the `common` harness) are used so that every byte of the answer is checked;
//! rumqttc 0.24 is an independent client for the credential checks. Every wait is bounded.

mod common;

use common::flow::{body_start, read_varint, u16_at};
use common::*;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one expected event.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing (more) arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);
/// How long a change made with the command line may take to reach a running broker. The README
/// promises "within a second"; the issue asks for ~2 s; a little slack for a loaded machine.
const LIVE_CHANGE: Duration = Duration::from_secs(3);
/// Bound for one admin command (argon2id hashing + a write that may wait for the broker's lock).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

// -------------------------------------------------------------------- versions

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V {
    V5,
    V311,
}

impl V {
    fn v5(self) -> bool {
        self == V::V5
    }
    /// The code this version uses for a CONNACK refusal, given the 5.0 reason.
    fn connack_code(self, v5_reason: u8) -> u8 {
        if self.v5() {
            return v5_reason;
        }
        match v5_reason {
            0x00 => 0,
            0x86 => 4,        // Bad user name or password
            0x87 | 0x8a => 5, // Not authorized (3.1.1 has no "banned")
            _ => 3,           // Server unavailable
        }
    }
    /// SUBACK code of a refused filter: 0x87 Not authorized (5.0) / 0x80 Failure (3.1.1).
    fn suback_denied(self) -> u8 {
        if self.v5() {
            0x87
        } else {
            0x80
        }
    }
}

/// One behaviour as two tests, `name::v5` and `name::v311`.
macro_rules! both_versions {
    ($($(#[$attr:meta])* $name:ident => $body:ident;)*) => {$(
        mod $name {
            #[test]
            $(#[$attr])*
            fn v5() {
                super::$body(super::V::V5)
            }
            #[test]
            $(#[$attr])*
            fn v311() {
                super::$body(super::V::V311)
            }
        }
    )*};
}

// ------------------------------------------------------------------- admin CLI

/// Runs `mqtt5-broker --db DB ARGS...` with `stdin` (the password for `user add|passwd`),
/// waits (bounded) and returns stdout; panics with everything it printed when it fails.
fn admin(db: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = common::run_admin(db, args, stdin, ADMIN_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "admin command {args:?} failed with {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn user_add(db: &Path, name: &str, password: &str) {
    let out = admin(db, &["user", "add", name], Some(&format!("{password}\n")));
    assert!(out.contains(&format!("added user {name}")), "{out}");
}

/// `acl add ARGS...`; returns the rule's id.
fn acl_add(db: &Path, args: &[&str]) -> i64 {
    let mut full = vec!["acl", "add"];
    full.extend_from_slice(args);
    let out = admin(db, &full, None);
    out.trim()
        .strip_prefix("added ACL rule ")
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected `acl add` output {out:?}"))
}

/// Every admin subcommand prints its result as whole lines: the output ends with a newline, so
/// consecutive commands in a terminal do not run together (`added user aliceadded ACL rule 1`).
#[test]
fn admin_subcommands_print_their_result_ending_with_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("admin.db");
    let commands: &[(&[&str], Option<&str>)] = &[
        (&["user", "list"], None),
        (&["user", "add", "alice"], Some("s3cret\n")),
        (&["user", "passwd", "alice"], Some("n3w\n")),
        (&["user", "list"], None),
        (&["acl", "list"], None),
        (&["acl", "add", "--user", "alice", "read", "a/#"], None),
        (&["acl", "list"], None),
        (&["acl", "del", "1"], None),
        (&["bans"], None),
        (&["ban", "client_id", "evil"], None),
        (&["bans"], None),
        (&["unban", "client_id", "evil"], None),
        (&["user", "del", "alice"], None),
    ];
    for (args, stdin) in commands {
        let out = admin(&db, args, *stdin);
        assert!(
            out.len() > 1 && out.ends_with('\n') && !out.ends_with("\n\n"),
            "{args:?} printed {out:?}"
        );
    }
}

/// A database in a temp dir, with accounts (name, password) and rules (`acl add` arguments).
struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn db_with(users: &[(&str, &str)], rules: &[&[&str]]) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    for (name, pw) in users {
        user_add(&path, name, pw);
    }
    for rule in rules {
        acl_add(&path, rule);
    }
    Db { _dir: dir, path }
}

// --------------------------------------------------------------------- packets

/// A will for [`connect_pkt`]: (topic, payload, QoS).
type WillSpec<'a> = Option<(&'a str, &'a [u8], u8)>;

/// CONNECT (5.0 §3.1 / 3.1.1 §3.1) with optional User Name (flag bit 7), Password (bit 6) and will
/// (bit 2, QoS bits 4–3), keep alive 60 s, the given raw 5.0 CONNECT properties.
fn connect_full(
    v: V,
    client_id: &str,
    clean: bool,
    user: Option<&str>,
    pass: Option<&[u8]>,
    props: &[u8],
    will: WillSpec,
) -> Vec<u8> {
    let mut flags = if clean { 0x02 } else { 0 };
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    if let Some((_, _, qos)) = will {
        flags |= 0x04 | (qos << 3);
    }
    let mut body = packet::utf8("MQTT");
    body.push(if v.v5() { 5 } else { 4 });
    body.push(flags);
    body.extend(60u16.to_be_bytes());
    if v.v5() {
        body.extend(packet::properties(props));
    }
    body.extend(packet::utf8(client_id));
    if let Some((topic, payload, _)) = will {
        if v.v5() {
            body.extend(packet::properties(&[])); // Will Properties
        }
        body.extend(packet::utf8(topic));
        body.extend(packet::binary(payload));
    }
    if let Some(u) = user {
        body.extend(packet::utf8(u));
    }
    if let Some(p) = pass {
        body.extend(packet::binary(p));
    }
    packet::fixed(0x10, &body)
}

/// CONNECT with Clean Start 1 and optional credentials.
fn connect_pkt(v: V, client_id: &str, user: Option<&str>, pass: Option<&str>) -> Vec<u8> {
    connect_full(v, client_id, true, user, pass.map(str::as_bytes), &[], None)
}

/// Sends `connect`, reads the CONNACK: (socket, Session Present, reason / return code).
fn open(addr: SocketAddr, v: V, connect: &[u8]) -> (TcpStream, bool, u8) {
    open_on(connect_raw(addr), v, connect)
}

/// [`open`] on a socket already connected (e.g. from another source address).
fn open_on(s: TcpStream, v: V, connect: &[u8]) -> (TcpStream, bool, u8) {
    send(&s, connect);
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {}", hex(&ack));
    if !v.v5() {
        assert_eq!(ack.len(), 4, "a 3.1.1 CONNACK is 4 bytes: {}", hex(&ack));
    }
    let i = body_start(&ack);
    (s, ack[i] & 1 == 1, ack[i + 1])
}

/// A logged-in client (CONNACK 0 asserted), Clean Start 1.
fn login(
    addr: SocketAddr,
    v: V,
    client_id: &str,
    user: Option<&str>,
    pass: Option<&str>,
) -> TcpStream {
    let (s, _, code) = open(addr, v, &connect_pkt(v, client_id, user, pass));
    assert_eq!(
        code, 0,
        "{v:?} client {client_id:?} user {user:?}: CONNACK code 0x{code:02x}, expected success"
    );
    s
}

/// Sends `connect` and checks the refusal: CONNACK `code` (already mapped to the version),
/// Session Present 0, then the connection closed by the server.
fn expect_refused(addr: SocketAddr, v: V, connect: &[u8], code: u8, what: &str) {
    expect_refused_on(connect_raw(addr), v, connect, code, what)
}

/// [`expect_refused`] on a socket already connected (e.g. from another source address).
fn expect_refused_on(s: TcpStream, v: V, connect: &[u8], code: u8, what: &str) {
    let (s, present, got) = open_on(s, v, connect);
    assert_eq!(
        got, code,
        "{v:?} {what}: CONNACK code 0x{got:02x}, expected 0x{code:02x}"
    );
    assert!(
        !present,
        "{v:?} {what}: Session Present must be 0 on a refusal (MQTT-3.2.2-6 / 3.1.1 MQTT-3.2.2-4)"
    );
    let rest = expect_closed(&s, WAIT);
    assert!(
        rest.is_empty(),
        "{v:?} {what}: nothing may follow a refusing CONNACK, got {}",
        hex(&rest)
    );
}

/// The CONNACK code a CONNECT gets (the socket is dropped).
fn connack_code(addr: SocketAddr, v: V, connect: &[u8]) -> u8 {
    open(addr, v, connect).2
}

/// SUBSCRIBE with several (filter, QoS) pairs; returns the SUBACK's codes.
fn subscribe(s: &TcpStream, v: V, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v.v5() {
        body.extend(packet::properties(&[]));
    }
    for (f, q) in filters {
        body.extend(packet::utf8(f));
        body.push(*q);
    }
    send(s, &packet::fixed(0x82, &body));
    let pkt = read_control(s, v);
    assert_eq!(pkt[0], 0x90, "expected SUBACK, got {}", hex(&pkt));
    let mut i = body_start(&pkt);
    assert_eq!(
        u16_at(&pkt, i),
        packet_id,
        "SUBACK packet id: {}",
        hex(&pkt)
    );
    i += 2;
    if v.v5() {
        let (plen, n) = read_varint(&pkt[i..]);
        i += n + plen;
    }
    let codes = pkt[i..].to_vec();
    assert_eq!(
        codes.len(),
        filters.len(),
        "one SUBACK code per filter (MQTT-3.8.4-6): {}",
        hex(&pkt)
    );
    codes
}

/// SUBSCRIBE one filter at QoS 1; returns its SUBACK code.
fn sub1(s: &TcpStream, v: V, packet_id: u16, filter: &str) -> u8 {
    subscribe(s, v, packet_id, &[(filter, 1)])[0]
}

/// (first byte, packet id, reason) of an acknowledgement; a missing reason is 0x00.
fn parse_ack(pkt: &[u8]) -> (u8, u16, u8) {
    let i = body_start(pkt);
    let reason = if pkt.len() - i >= 3 { pkt[i + 2] } else { 0 };
    (pkt[0], u16_at(pkt, i), reason)
}

/// Publishes at `qos` (1 or 2) and completes the flow; returns the reason code of the
/// PUBACK / PUBREC (always 0 for 3.1.1, which has none). A PUBREC with a reason ≥ 0x80 ends
/// the flow (§4.3.3); otherwise PUBREL → PUBCOMP.
fn publish_acked(s: &TcpStream, v: V, topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> u8 {
    assert!(qos == 1 || qos == 2);
    send(
        s,
        &packet::publish(v.v5(), topic, payload, qos, Some(packet_id), false, false),
    );
    let pkt = read_control(s, v);
    let (first, id, reason) = parse_ack(&pkt);
    let want = if qos == 1 { 0x40 } else { 0x50 };
    assert_eq!(
        (first, id),
        (want, packet_id),
        "{v:?} PUBLISH {topic} QoS {qos}: expected ack, got {}",
        hex(&pkt)
    );
    if !v.v5() {
        assert_eq!(pkt.len(), 4, "3.1.1 acks are 4 bytes: {}", hex(&pkt));
    }
    if qos == 2 && reason < 0x80 {
        send(s, &packet::pubrel(packet_id));
        let comp = read_control(s, v);
        assert_eq!(
            (comp[0], u16_at(&comp, body_start(&comp))),
            (0x70, packet_id),
            "expected PUBCOMP, got {}",
            hex(&comp)
        );
    }
    reason
}

/// Messages that arrived while a publish or a subscribe waited for its answer, per socket (keyed
/// by its local address); [`next_publish`] hands them out first, in order.
static STASH: Mutex<BTreeMap<SocketAddr, VecDeque<Pub>>> = Mutex::new(BTreeMap::new());

fn unstash(s: &TcpStream) -> Option<Pub> {
    let key = s.local_addr().unwrap();
    STASH.lock().unwrap().get_mut(&key)?.pop_front()
}

/// The next packet that is not an application message: PUBLISHes arriving first are
/// acknowledged and stashed for [`next_publish`], a PUBREL is answered with PUBCOMP.
fn read_control(s: &TcpStream, v: V) -> Vec<u8> {
    for _ in 0..10_000 {
        let pkt = read_packet(s);
        match pkt[0] >> 4 {
            3 => {
                let p = take_publish(s, v, &pkt);
                let key = s.local_addr().unwrap();
                STASH.lock().unwrap().entry(key).or_default().push_back(p);
            }
            6 => send(s, &packet::pubcomp(u16_at(&pkt, body_start(&pkt)))),
            _ => return pkt,
        }
    }
    panic!("{v:?}: 10,000 messages and still no answer");
}

/// A PUBLISH as received.
#[derive(Debug, Clone)]
struct Pub {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
}

/// Parses a PUBLISH and acknowledges it (PUBACK for QoS 1; PUBREC for QoS 2, whose PUBREL is
/// answered in [`next_publish`]).
fn take_publish(s: &TcpStream, v: V, pkt: &[u8]) -> Pub {
    assert_eq!(pkt[0] >> 4, 3, "expected PUBLISH, got {}", hex(pkt));
    let qos = (pkt[0] >> 1) & 3;
    let mut i = body_start(pkt);
    let tlen = usize::from(u16_at(pkt, i));
    i += 2;
    let topic = String::from_utf8(pkt[i..i + tlen].to_vec()).unwrap();
    i += tlen;
    let mut id = 0;
    if qos > 0 {
        id = u16_at(pkt, i);
        i += 2;
    }
    if v.v5() {
        let (plen, n) = read_varint(&pkt[i..]);
        i += n + plen;
    }
    match qos {
        1 => send(s, &packet::puback(id)),
        2 => send(s, &packet::pubrec(id)),
        _ => {}
    }
    Pub {
        topic,
        payload: pkt[i..].to_vec(),
        qos,
        retain: pkt[0] & 1 == 1,
    }
}

/// The next application message within `timeout` (acks handled), or `None`. Any other packet
/// than PUBLISH / PUBREL (e.g. a DISCONNECT) fails the test.
fn next_publish(s: &TcpStream, v: V, timeout: Duration) -> Option<Pub> {
    if let Some(p) = unstash(s) {
        return Some(p);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let pkt = try_read_packet(s, left)?;
        match pkt[0] >> 4 {
            3 => return Some(take_publish(s, v, &pkt)),
            6 => send(s, &packet::pubcomp(u16_at(&pkt, body_start(&pkt)))),
            _ => panic!("{v:?}: expected PUBLISH, got {}", hex(&pkt)),
        }
    }
}

/// Every message received up to and including the first one on `sentinel` (bounded by WAIT).
fn until_sentinel(s: &TcpStream, v: V, sentinel: &str) -> Vec<Pub> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_publish(s, v, left) {
            Some(p) => {
                let done = p.topic == sentinel;
                got.push(p);
                if done {
                    return got;
                }
            }
            None => panic!(
                "{v:?}: sentinel {sentinel:?} not received within {WAIT:?}; got {:?}",
                topics(&got)
            ),
        }
    }
}

/// Every message received up to and including the first one with `payload` (bounded by WAIT).
fn until_payload(s: &TcpStream, v: V, payload: &[u8]) -> Vec<Pub> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_publish(s, v, left) {
            Some(p) => {
                let done = p.payload == payload;
                got.push(p);
                if done {
                    return got;
                }
            }
            None => panic!(
                "{v:?}: sentinel payload {:?} not received within {WAIT:?}; got {:?}",
                String::from_utf8_lossy(payload),
                topics(&got)
            ),
        }
    }
}

fn topics(msgs: &[Pub]) -> Vec<&str> {
    msgs.iter().map(|p| p.topic.as_str()).collect()
}

/// Nothing at all arrives within `QUIET`.
fn expect_nothing(s: &TcpStream, v: V, what: &str) {
    if let Some(p) = unstash(s) {
        panic!("{v:?} {what}: expected nothing, got {p:?}");
    }
    if let Some(pkt) = try_read_packet(s, QUIET) {
        panic!("{v:?} {what}: expected nothing, got {}", hex(&pkt));
    }
}

/// PINGREQ answered by PINGRESP as the very next packet: the connection is alive and was sent
/// nothing else (no DISCONNECT).
fn ping(s: &TcpStream, v: V, what: &str) {
    send(s, &packet::pingreq());
    let pkt = read_packet(s);
    assert_eq!(
        pkt,
        packet::pingresp(),
        "{v:?} {what}: expected PINGRESP, got {}",
        hex(&pkt)
    );
}

/// Polls `f` every 50 ms until it returns true; panics after `LIVE_CHANGE`. Returns the time it
/// took.
fn poll_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let deadline = start + LIVE_CHANGE;
    for _attempt in 0..1000 {
        if f() {
            let took = start.elapsed();
            eprintln!("{what}: took effect after {took:?}");
            return took;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in effect within {LIVE_CHANGE:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not in effect after 1000 attempts");
}

/// Session Expiry Interval 3600 s (5.0 CONNECT property 0x11).
const EXPIRY_3600: [u8; 5] = [0x11, 0x00, 0x00, 0x0e, 0x10];

// ======================================================= authentication (CONNECT)

both_versions! {
    right_password_gets_connack_success_3_1_3_5_3_2_2_2 => right_password;
    wrong_password_gets_bad_user_name_or_password_3_2_2_2 => wrong_password;
    unknown_user_gets_bad_user_name_or_password_3_2_2_2 => unknown_user;
    no_credentials_with_anonymous_off_gets_not_authorized_3_2_2_2 => anonymous_off;
    anonymous_on_accepts_clients_without_credentials_3_1_2_9 => anonymous_on;
    failed_login_does_not_disturb_the_live_session_3_1_4 => failed_login_keeps_live_session;
    banned_client_id_gets_banned_3_2_2_2 => banned_client_id;
    banned_username_gets_banned_3_2_2_2 => banned_username;
    connect_rate_limit_gets_connection_rate_exceeded_3_2_2_2 => connect_rate_limit;
    accounts_and_bans_changed_while_running_take_effect_without_restart => live_accounts_and_bans;
}

fn right_password(v: V) {
    let db = db_with(&[("alice", "alice-pw"), ("bob", "bob pw with spaces")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let (s, present, code) = open(
        b.mqtt,
        v,
        &connect_pkt(v, "c-alice", Some("alice"), Some("alice-pw")),
    );
    assert_eq!(code, 0, "{v:?}: right password refused with 0x{code:02x}");
    assert!(!present, "Clean Start 1 → Session Present 0 (MQTT-3.2.2-2)");
    ping(&s, v, "logged-in client");
    // A password with spaces is taken whole from the admin command's stdin line.
    let s2 = login(b.mqtt, v, "c-bob", Some("bob"), Some("bob pw with spaces"));
    ping(&s2, v, "second account");
    // Both work at once, and each can publish / subscribe (no ACL rule = everything allowed).
    assert_eq!(sub1(&s, v, 1, "t/#"), 1);
    assert!(publish_acked(&s2, v, "t/x", b"hi", 1, 7) < 0x80);
    let p = next_publish(&s, v, WAIT).expect("message from bob");
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("t/x", &b"hi"[..])
    );
}

fn wrong_password(v: V) {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let code = v.connack_code(0x86);
    let connect =
        |pass: Option<&[u8]>| connect_full(v, "c-alice", true, Some("alice"), pass, &[], None);
    // Three wrong passwords in a row from one address are each checked and refused ...
    for (what, pass) in [
        ("wrong password", Some(&b"alice-PW"[..])),
        ("password with a trailing newline", Some(&b"alice-pw\n"[..])),
        ("empty password", Some(&b""[..])),
    ] {
        expect_refused(b.mqtt, v, &connect(pass), code, what);
    }
    // ... then that address waits (1 s, doubling) before it is checked again, even with the right
    // password: 0x9F Connection rate exceeded (3.1.1: 0x03 Server unavailable), no hash computed.
    expect_refused(
        b.mqtt,
        v,
        &connect(Some(b"alice-pw")),
        v.connack_code(0x9f),
        "fourth attempt within the wait",
    );
    // Other addresses are not held up by it.
    expect_refused_on(
        connect_raw_from(b.mqtt, Ipv4Addr::new(127, 0, 0, 2)),
        v,
        &connect(None),
        code,
        "user name without password, from another address",
    );
    let s = connect_raw_from(b.mqtt, Ipv4Addr::new(127, 0, 0, 3));
    let (s, _, got) = open_on(s, v, &connect(Some(b"alice-pw")));
    assert_eq!(got, 0, "{v:?}: right password from a third address");
    ping(&s, v, "from another address");
    // The throttled address is checked again once its wait is over.
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let (s, _, got) = open(b.mqtt, v, &connect(Some(b"alice-pw")));
        if got == 0 {
            break s;
        }
        assert_eq!(
            got,
            v.connack_code(0x9f),
            "{v:?}: only throttled while waiting"
        );
        assert!(
            Instant::now() < deadline,
            "{v:?}: still throttled after 5 s"
        );
        thread::sleep(Duration::from_millis(100));
    };
    ping(&s, v, "after the wait");
    assert!(
        b.log().contains("wrong username or password")
            && b.log()
                .contains("too many wrong passwords from this address"),
        "refusals are logged:\n{}",
        b.log()
    );
}

fn unknown_user(v: V) {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let code = v.connack_code(0x86);
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-mallory", Some("mallory"), Some("alice-pw")),
        code,
        "unknown user",
    );
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-mallory", Some("Alice"), Some("alice-pw")),
        code,
        "user names are case-sensitive",
    );
    // Not registered on first connect (the original design did that): still refused.
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-mallory", Some("mallory"), Some("alice-pw")),
        code,
        "unknown user, second attempt",
    );
    let users = admin(&db.path, &["user", "list"], None);
    assert!(
        !users.contains("mallory") && users.contains("alice"),
        "a failed login creates no account: {users}"
    );
}

fn anonymous_off(v: V) {
    // Default settings (no --allow-anonymous), with an account and without any.
    let with = db_with(&[("alice", "alice-pw")], &[]);
    let without = db_with(&[], &[]);
    for db in [&with, &without] {
        let b = Broker::start_with_db(&db.path, &[]);
        expect_refused(
            b.mqtt,
            v,
            &connect_pkt(v, "anon", None, None),
            v.connack_code(0x87),
            "no credentials, anonymous off",
        );
        if v.v5() {
            // 5.0 allows a Password without a User Name (§3.1.2.9); it is not a login.
            expect_refused(
                b.mqtt,
                v,
                &connect_full(v, "anon", true, None, Some(b"alice-pw"), &[], None),
                0x87,
                "password without user name",
            );
        }
    }
}

fn anonymous_on(v: V) {
    // Accounts exist: anonymous clients are let in, but a username must still log in.
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &["--allow-anonymous"]);
    let s = login(b.mqtt, v, "anon-1", None, None);
    ping(&s, v, "anonymous client");
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    ping(&a, v, "alice");
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-alice2", Some("alice"), Some("nope")),
        v.connack_code(0x86),
        "wrong password with anonymous on",
    );
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-zed", Some("zed"), Some("whatever")),
        v.connack_code(0x86),
        "unknown user with anonymous on and accounts in the database",
    );
    drop(b);
    // No account at all: a username is only a label (README).
    let empty = db_with(&[], &[]);
    let b = Broker::start_with_db(&empty.path, &["--allow-anonymous"]);
    let s = login(b.mqtt, v, "labelled", Some("zed"), Some("anything"));
    ping(&s, v, "username as a label");
}

fn failed_login_keeps_live_session(v: V) {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let id = "live-1";
    // The live client: a persistent session (5.0: Session Expiry 3600 s; 3.1.1: Clean
    // Session 0) with a subscription.
    let live_connect = if v.v5() {
        connect_full(
            v,
            id,
            true,
            Some("alice"),
            Some(b"alice-pw"),
            &EXPIRY_3600,
            None,
        )
    } else {
        connect_full(v, id, false, Some("alice"), Some(b"alice-pw"), &[], None)
    };
    let (live, _, code) = open(b.mqtt, v, &live_connect);
    assert_eq!(code, 0);
    assert_eq!(sub1(&live, v, 1, "live/t"), 1);
    // Takeover attempts with the same client id and Clean Start 1 that fail authentication.
    let bad = [
        (
            "wrong password",
            connect_pkt(v, id, Some("alice"), Some("bad")),
            0x86,
        ),
        (
            "unknown user",
            connect_pkt(v, id, Some("eve"), Some("x")),
            0x86,
        ),
        ("no credentials", connect_pkt(v, id, None, None), 0x87),
    ];
    for (what, pkt, reason) in &bad {
        expect_refused(b.mqtt, v, pkt, v.connack_code(*reason), what);
        // The live connection got nothing (no DISCONNECT 0x8E Session taken over) and works.
        ping(
            &live,
            v,
            &format!("live client after a refused takeover ({what})"),
        );
    }
    // It still receives what is published to its subscription.
    let publisher = login(b.mqtt, v, "pub-1", Some("alice"), Some("alice-pw"));
    assert!(publish_acked(&publisher, v, "live/t", b"still here", 1, 1) < 0x80);
    let p = next_publish(&live, v, WAIT).expect("live client receives after failed logins");
    assert_eq!(p.payload, b"still here");
    // And the session itself was not discarded by the refused Clean Start 1 CONNECTs.
    send(
        &live,
        &if v.v5() {
            packet::disconnect_v5(0)
        } else {
            packet::disconnect_v311()
        },
    );
    expect_closed(&live, WAIT);
    let resume = connect_full(
        v,
        id,
        false,
        Some("alice"),
        Some(b"alice-pw"),
        if v.v5() { &EXPIRY_3600 } else { &[] },
        None,
    );
    let (s, present, code) = open(b.mqtt, v, &resume);
    assert_eq!(code, 0);
    assert!(present, "{v:?}: the session survived the refused takeovers");
    assert!(publish_acked(&publisher, v, "live/t", b"again", 1, 2) < 0x80);
    let p = next_publish(&s, v, WAIT).expect("the subscription survived too");
    assert_eq!(p.payload, b"again");
}

fn banned_client_id(v: V) {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    admin(&db.path, &["ban", "client_id", "evil-1"], None);
    let b = Broker::start_with_db(&db.path, &["--allow-anonymous"]);
    let code = v.connack_code(0x8a);
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "evil-1", Some("alice"), Some("alice-pw")),
        code,
        "banned client id with a valid login",
    );
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "evil-1", None, None),
        code,
        "banned client id, anonymous",
    );
    // Exact match only.
    let s = login(b.mqtt, v, "evil-12", Some("alice"), Some("alice-pw"));
    ping(&s, v, "a client id that merely starts like the banned one");
    let s = login(b.mqtt, v, "EVIL-1", None, None);
    ping(&s, v, "client ids are case-sensitive");
}

fn banned_username(v: V) {
    let db = db_with(&[("alice", "alice-pw"), ("mallory", "mallory-pw")], &[]);
    admin(&db.path, &["ban", "username", "mallory"], None);
    let b = Broker::start_with_db(&db.path, &[]);
    let code = v.connack_code(0x8a);
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "c-m1", Some("mallory"), Some("mallory-pw")),
        code,
        "banned username with the right password",
    );
    // A ban on a username says nothing about a client id of that name.
    let s = login(b.mqtt, v, "mallory", Some("alice"), Some("alice-pw"));
    ping(&s, v, "client id equal to a banned username");
    let bans = admin(&db.path, &["bans"], None);
    assert!(bans.contains("mallory"), "{bans}");
}

fn connect_rate_limit(v: V) {
    let b = Broker::start(&["--allow-anonymous", "--connect-rate-limit", "3"]);
    for i in 0..3 {
        let s = login(b.mqtt, v, "rl-1", None, None);
        ping(&s, v, &format!("connect {} of 3", i + 1));
        send(
            &s,
            &if v.v5() {
                packet::disconnect_v5(0)
            } else {
                packet::disconnect_v311()
            },
        );
        expect_closed(&s, WAIT);
    }
    // The fourth CONNECT within a minute: 0x9F Connection rate exceeded (5.0); 3.1.1 has no
    // such code and gets 3 Server unavailable, the closest (the client may retry later).
    let code = v.connack_code(0x9f);
    expect_refused(
        b.mqtt,
        v,
        &connect_pkt(v, "rl-1", None, None),
        code,
        "fourth connect within a minute",
    );
    if !v.v5() {
        assert_eq!(code, 3);
    }
    // Per client id: another id is not affected.
    let s = login(b.mqtt, v, "rl-2", None, None);
    ping(&s, v, "another client id");
}

fn live_accounts_and_bans(v: V) {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let addr = b.mqtt;
    let mut n = 0u32;
    // Unique client ids, so polling never runs into the connect-rate limit.
    let mut code_for = |user: &str, pass: &str| {
        n += 1;
        connack_code(
            addr,
            v,
            &connect_pkt(v, &format!("live-{n}"), Some(user), Some(pass)),
        )
    };
    let bad = v.connack_code(0x86);
    assert_eq!(code_for("carol", "carol-pw"), bad);
    user_add(&db.path, "carol", "carol-pw");
    poll_until("user add", || code_for("carol", "carol-pw") == 0);
    admin(&db.path, &["user", "passwd", "carol"], Some("carol-new\n"));
    poll_until("user passwd (old password refused)", || {
        code_for("carol", "carol-pw") == bad
    });
    assert_eq!(code_for("carol", "carol-new"), 0, "new password accepted");
    admin(&db.path, &["ban", "username", "carol"], None);
    poll_until("ban username", || {
        code_for("carol", "carol-new") == v.connack_code(0x8a)
    });
    admin(&db.path, &["unban", "username", "carol"], None);
    poll_until("unban username", || code_for("carol", "carol-new") == 0);
    admin(&db.path, &["user", "del", "carol"], None);
    poll_until("user del", || code_for("carol", "carol-new") == bad);
    // A client id ban at run time.
    let ok = login(addr, v, "later-banned", Some("alice"), Some("alice-pw"));
    drop(ok);
    admin(&db.path, &["ban", "client_id", "later-banned"], None);
    poll_until("ban client_id", || {
        connack_code(
            addr,
            v,
            &connect_pkt(v, "later-banned", Some("alice"), Some("alice-pw")),
        ) == v.connack_code(0x8a)
    });
}

#[test]
fn unknown_user_is_refused_no_faster_than_a_wrong_password() {
    // README: "same time either way (argon2id)" — an unknown name must not be detectable by
    // timing. Medians of interleaved attempts; a loose bound (the hash dominates: several ms,
    // against well under 1 ms for a refusal without any hash).
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let v = V::V5;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..9u8 {
        for (k, user, times) in [(0u8, "alice", &mut wrong), (1, "nobody", &mut unknown)] {
            let pkt = connect_pkt(v, &format!("t-{i}-{user}"), Some(user), Some("guess"));
            // A new source address each time: from one, the fourth wrong password in a row
            // would be throttled instead of checked.
            let s = connect_raw_from(b.mqtt, Ipv4Addr::new(127, 0, 1, 2 * i + k + 1));
            let t = Instant::now();
            send(&s, &pkt);
            let ack = read_packet(&s);
            times.push(t.elapsed());
            assert_eq!(ack[body_start(&ack) + 1], 0x86, "{}", hex(&ack));
        }
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[4], unknown[4]);
    eprintln!("median refusal: wrong password {w:?}, unknown user {u:?}");
    assert!(
        u * 4 >= w,
        "unknown user refused in {u:?} (median), wrong password in {w:?}: the hash is skipped \
         for unknown users, so account names can be probed by timing"
    );
}

/// A password stored with older, weaker argon2id parameters (m = 6 MiB, t = 1, as before
/// OWASP's minimum was adopted) still logs in, and that login replaces the stored hash with
/// one at the current parameters; after a restart (no remembered password) the new hash
/// verifies the right password and refuses a wrong one.
#[test]
fn a_hash_with_old_parameters_logs_in_and_is_replaced_at_that_login() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let params = argon2::Params::new(6 * 1024, 1, 1, None).expect("argon2 parameters");
    let old = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"alice-pw", &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string();
    let conn = rusqlite::Connection::open(&db.path).expect("open the database");
    let n = conn
        .execute(
            "UPDATE users SET password_hash = ?1 WHERE name = 'alice'",
            [&old],
        )
        .expect("store the old hash");
    assert_eq!(n, 1);
    drop(conn);
    let current = format!(
        "SELECT count(*) FROM users WHERE name = 'alice' AND password_hash LIKE \
         '$argon2id$v=19$m={},t={},p={}$%'",
        mqtt5_broker::auth::ARGON2_M_COST_KIB,
        mqtt5_broker::auth::ARGON2_T_COST,
        mqtt5_broker::auth::ARGON2_P_COST
    );

    let mut b = Broker::start_with_db(&db.path, &[]);
    b.await_db("the old hash is stored", &current, 0);
    let s = login(b.mqtt, V::V5, "c-alice", Some("alice"), Some("alice-pw"));
    ping(&s, V::V5, "logged in with the old hash");
    b.await_db("the hash is replaced at that login", &current, 1);
    drop(s);
    b.terminate();

    let b = Broker::start_with_db(&db.path, &[]);
    let s = login(b.mqtt, V::V311, "c-alice", Some("alice"), Some("alice-pw"));
    ping(&s, V::V311, "logged in with the new hash");
    expect_refused(
        b.mqtt,
        V::V311,
        &connect_pkt(V::V311, "c-alice-2", Some("alice"), Some("alice-PW")),
        V::V311.connack_code(0x86),
        "wrong password against the new hash",
    );
}

/// A guesser: 1,000 CONNECTs with wrong passwords from one address, a new client id each
/// (the per-client-id rate limit never sees two). The address backs off, so the broker hashes
/// only a handful of them (3 free, then one per wait of 1 s, 2 s, 4 s …) and answers the rest
/// 0x9F without a hash; a client with the right password from another address connects at its
/// first attempt meanwhile. Measured: 0.19 s of broker CPU for the 1,000; each verified
/// password costs ~40 ms (argon2id m = 7 MiB, t = 5), so hashing every guess would cost ~40 s.
#[test]
fn thousand_wrong_passwords_from_one_address_cost_little_cpu_and_lock_out_nobody_else() {
    const GUESSES: usize = 1000;
    /// Twenty times the measured figure, and a tenth of what hashing every guess costs.
    const CPU_LIMIT_S: f64 = 4.0;
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let v = V::V5;
    let pid = b.pid();
    let cpu_before = common::procfs::cpu_seconds(pid);
    let started = Instant::now();
    let (mut throttled, mut unanswered) = (0, 0);
    for i in 0..GUESSES {
        let pkt = connect_pkt(
            v,
            &format!("guess-{i}"),
            Some("alice"),
            Some(&format!("pw-{i}")),
        );
        let s = connect_raw(b.mqtt);
        send(&s, &pkt);
        match read_packet_within(&s, WAIT) {
            Some(ack) => {
                let code = ack[body_start(&ack) + 1];
                assert!(
                    ack[0] == 0x20 && (code == 0x86 || code == 0x9f),
                    "guess {i}: {}, expected CONNACK 0x86 or 0x9F",
                    hex(&ack)
                );
                throttled += usize::from(code == 0x9f);
            }
            // The address's pending places (10) were all held by refusals still being
            // written and closed: the new socket is closed unanswered (tests/pending.rs).
            None => {
                assert!(closed_by_peer(&s), "guess {i}: neither answered nor closed");
                unanswered += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{i} guesses took 120 s"
        );
    }
    let cpu = common::procfs::cpu_seconds(pid) - cpu_before;
    let took = started.elapsed();
    let s = connect_raw_from(b.mqtt, Ipv4Addr::new(127, 0, 0, 2));
    let t = Instant::now();
    let (s, _, code) = open_on(
        s,
        v,
        &connect_pkt(v, "alice-home", Some("alice"), Some("alice-pw")),
    );
    eprintln!(
        "{GUESSES} guesses in {took:?}: {throttled} throttled without a hash, {unanswered} closed \
         unanswered, broker CPU {cpu:.2} s; the right password from another address answered \
         in {:?}",
        t.elapsed()
    );
    assert_eq!(
        code, 0,
        "the right password from another address, at its first attempt"
    );
    ping(&s, v, "the right password from another address");
    assert!(
        throttled + unanswered >= GUESSES - 50,
        "only {throttled} of {GUESSES} guesses were throttled ({unanswered} closed unanswered)"
    );
    assert!(
        cpu < CPU_LIMIT_S,
        "the broker used {cpu:.2} s of CPU for {GUESSES} wrong passwords"
    );
}

#[test]
fn rumqttc_logs_in_with_credentials_and_gets_refusal_codes() {
    let db = db_with(&[("alice", "alice-pw")], &[]);
    let b = Broker::start_with_db(&db.path, &[]);
    let port = b.mqtt.port();

    // 3.1.1 (rumqttc's v4 client).
    let first_event_v4 = |user: &str, pass: &str| -> Result<bool, String> {
        let mut o = rumqttc::MqttOptions::new(format!("rq4-{user}"), "127.0.0.1", port);
        o.set_credentials(user, pass);
        o.set_keep_alive(Duration::from_secs(30));
        let (_client, mut conn) = rumqttc::Client::new(o, 10);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)))) => {
                    return Ok(c.code == rumqttc::ConnectReturnCode::Success)
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(format!("{e:?}")),
                Err(_) => continue,
            }
        }
        Err("no CONNACK".into())
    };
    assert_eq!(first_event_v4("alice", "alice-pw"), Ok(true));
    let e = first_event_v4("alice", "wrong").unwrap_err();
    assert!(
        e.contains("BadUserNamePassword"),
        "3.1.1 refusal seen by rumqttc: {e}"
    );

    // 5.0.
    let first_event_v5 = |user: &str, pass: &str| -> Result<bool, String> {
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
        let mut o = rumqttc::v5::MqttOptions::new(format!("rq5-{user}"), "127.0.0.1", port);
        o.set_credentials(user, pass);
        o.set_keep_alive(Duration::from_secs(30));
        let (_client, mut conn) = rumqttc::v5::Client::new(o, 10);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(c)))) => {
                    return Ok(c.code == ConnectReturnCode::Success)
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(format!("{e:?}")),
                Err(_) => continue,
            }
        }
        Err("no CONNACK".into())
    };
    assert_eq!(first_event_v5("alice", "alice-pw"), Ok(true));
    let e = first_event_v5("alice", "wrong").unwrap_err();
    assert!(
        e.contains("BadUserNamePassword"),
        "5.0 refusal seen by rumqttc: {e}"
    );
    let e = first_event_v5("nobody", "x").unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "5.0 unknown user: {e}");
}

// ========================================================================= ACL

both_versions! {
    acl_publish_allow_and_deny_3_3_4_3_4_2_1 => acl_publish;
    acl_subscribe_allow_and_deny_3_9_3 => acl_subscribe;
    acl_percent_u_and_percent_c_substitution => acl_substitution;
    acl_plus_and_hash_wildcards_in_rules => acl_wildcards;
    acl_deny_rule_inside_a_wider_allowed_subscription => acl_deny_inside_wider;
    acl_deny_rule_applies_to_retained_messages_sent_at_subscribe => acl_deny_retained;
    acl_rules_changed_while_running_take_effect_without_restart => acl_live_changes;
    acl_will_on_a_topic_the_client_may_not_publish_is_not_delivered => acl_will;
}

fn acl_publish(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("watcher", "watcher-pw")],
        &[
            &["--user", "alice", "readwrite", "pub/ok/#"],
            &["--user", "alice", "read", "pub/ro/#"],
            &["--user", "watcher", "read", "pub/#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let w = login(b.mqtt, v, "watcher", Some("watcher"), Some("watcher-pw"));
    assert_eq!(subscribe(&w, v, 1, &[("pub/#", 2)]), vec![2]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    let denied = if v.v5() { 0x87 } else { 0x00 };

    assert_eq!(publish_acked(&a, v, "pub/ok/1", b"ok1", 1, 1), 0x00);
    // 5.0: PUBACK / PUBREC 0x87 Not authorized. 3.1.1 cannot say so: a normal acknowledgement
    // and the message is dropped (MQTT-3.3.5-2: positive ack or close; the broker acks).
    let r = publish_acked(&a, v, "pub/ro/1", b"ro1", 1, 2);
    assert_eq!(
        r, denied,
        "{v:?}: denied QoS 1 publish, ack reason 0x{r:02x}"
    );
    let r = publish_acked(&a, v, "pub/ro/2", b"ro2", 2, 3);
    assert_eq!(
        r, denied,
        "{v:?}: denied QoS 2 publish, PUBREC reason 0x{r:02x}"
    );
    let r = publish_acked(&a, v, "elsewhere", b"nowhere", 1, 4);
    assert_eq!(r, denied, "{v:?}: no rule at all for the topic");
    send(
        &a,
        &packet::publish(v.v5(), "pub/ro/0", b"ro0", 0, None, false, false),
    );
    // Retained publishes that are denied must not become retained either.
    send(
        &a,
        &packet::publish(v.v5(), "pub/ro/r", b"ror", 1, Some(5), true, false),
    );
    let (first, id, reason) = parse_ack(&read_packet(&a));
    assert_eq!((first, id, reason), (0x40, 5, denied));
    assert_eq!(publish_acked(&a, v, "pub/ok/2", b"ok2", 2, 6), 0x00);
    assert_eq!(publish_acked(&a, v, "pub/ok/end", b"end", 1, 7), 0x00);
    // The connection is still fine after refusals (they cost only the message).
    ping(&a, v, "publisher after denied publishes");

    let got = until_sentinel(&w, v, "pub/ok/end");
    assert_eq!(
        topics(&got),
        vec!["pub/ok/1", "pub/ok/2", "pub/ok/end"],
        "{v:?}: only the allowed publishes are delivered"
    );
    assert_eq!(
        got.iter().map(|m| m.qos).collect::<Vec<_>>(),
        vec![1, 2, 1],
        "{v:?}: delivered at the published QoS"
    );
    // No retained message was stored for the denied retained publish.
    let w2 = login(b.mqtt, v, "watcher-2", Some("watcher"), Some("watcher-pw"));
    assert_eq!(sub1(&w2, v, 1, "pub/ro/r"), 1);
    expect_nothing(&w2, v, "retained message from a denied publish");
}

fn acl_subscribe(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("pub", "pub-pw")],
        &[
            &["--user", "alice", "read", "sub/ok/#"],
            &["--user", "alice", "write", "sub/wo/#"],
            &["--user", "pub", "write", "sub/#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    let d = v.suback_denied();
    let codes = subscribe(
        &a,
        v,
        1,
        &[
            ("sub/ok/x", 1),
            ("sub/wo/x", 1), // write-only
            ("sub/#", 0),    // wider than the rule
            ("#", 0),        // everything
            ("sub/ok/#", 2), // exactly the rule
            ("other", 1),    // no rule
            ("sub/+/x", 1),  // `+` can reach sub/wo/x
        ],
    );
    assert_eq!(
        codes,
        vec![1, d, d, d, 2, d, d],
        "{v:?}: SUBACK codes per filter"
    );
    if v.v5() {
        // Shared subscriptions are checked against the real filter.
        assert_eq!(subscribe(&a, v, 2, &[("$share/g/sub/wo/x", 1)]), vec![0x87]);
        assert_eq!(subscribe(&a, v, 3, &[("$share/g/sub/ok/y", 1)]), vec![1]);
    }
    let p = login(b.mqtt, v, "c-pub", Some("pub"), Some("pub-pw"));
    for t in ["sub/wo/x", "sub/ok/x", "sub/other", "sub/ok/end"] {
        publish_acked(&p, v, t, t.as_bytes(), 1, 1);
    }
    let got = until_sentinel(&a, v, "sub/ok/end");
    let mut seen: Vec<&str> = topics(&got);
    seen.sort();
    seen.dedup(); // sub/ok/x matches two of alice's filters: one copy or two (§3.3.4)
    assert!(
        !seen.contains(&"sub/wo/x") && !seen.contains(&"sub/other"),
        "{v:?}: received on a refused subscription: {seen:?}"
    );
    assert!(seen.contains(&"sub/ok/x"), "{v:?}: {seen:?}");
}

fn acl_substitution(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
        &[&["readwrite", "users/%u/#"], &["readwrite", "clients/%c/#"]],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    let bob = login(b.mqtt, v, "c-bob", Some("bob"), Some("bob-pw"));
    let d = v.suback_denied();
    assert_eq!(
        subscribe(
            &a,
            v,
            1,
            &[
                ("users/alice/#", 1),
                ("users/bob/#", 1),
                ("users/+/x", 1),
                ("clients/c-alice/#", 1),
                ("clients/c-bob/#", 1),
            ]
        ),
        vec![1, d, d, 1, d],
        "{v:?}: %u / %c in subscriptions"
    );
    assert_eq!(
        subscribe(&bob, v, 1, &[("users/bob/#", 1), ("clients/c-bob/#", 1)]),
        vec![1, 1]
    );
    let denied = if v.v5() { 0x87 } else { 0x00 };
    // bob may not write under alice's name or client id.
    assert_eq!(
        publish_acked(&bob, v, "users/alice/x", b"forged", 1, 1),
        denied
    );
    assert_eq!(
        publish_acked(&bob, v, "clients/c-alice/x", b"forged", 1, 2),
        denied
    );
    // alice may not write into bob's tree.
    assert_eq!(publish_acked(&a, v, "users/bob/x", b"forged", 1, 3), denied);
    // Each writes into its own.
    assert_eq!(publish_acked(&a, v, "users/alice/self", b"a1", 1, 4), 0);
    assert_eq!(publish_acked(&a, v, "clients/c-alice/self", b"a2", 1, 5), 0);
    assert_eq!(publish_acked(&bob, v, "users/bob/self", b"b1", 1, 6), 0);
    assert_eq!(publish_acked(&a, v, "users/alice/end", b"end", 1, 7), 0);
    assert_eq!(publish_acked(&bob, v, "users/bob/end", b"end", 1, 8), 0);
    let got = until_sentinel(&a, v, "users/alice/end");
    assert_eq!(
        topics(&got),
        vec![
            "users/alice/self",
            "clients/c-alice/self",
            "users/alice/end"
        ],
        "{v:?}: alice receives exactly her own topics"
    );
    let got = until_sentinel(&bob, v, "users/bob/end");
    assert_eq!(topics(&got), vec!["users/bob/self", "users/bob/end"]);
    // The same user with another client id loses the %c topics but keeps the %u ones.
    let a2 = login(b.mqtt, v, "c-alice-2", Some("alice"), Some("alice-pw"));
    assert_eq!(
        subscribe(&a2, v, 1, &[("users/alice/#", 1), ("clients/c-alice/#", 1)]),
        vec![1, d]
    );
}

fn acl_wildcards(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("pub", "pub-pw")],
        &[
            &["--user", "alice", "readwrite", "sensors/+/temp"],
            &["--user", "alice", "readwrite", "home/#"],
            &["--user", "pub", "write", "#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    let d = v.suback_denied();
    let cases: &[(&str, bool)] = &[
        ("sensors/kitchen/temp", true),
        ("sensors/+/temp", true),
        ("sensors/#", false),
        ("sensors/kitchen/hum", false),
        ("sensors/+/+", false),
        ("sensors/a/b/temp", false),
        ("home/#", true),
        ("home", true), // `#` includes the parent level (§4.7.1.2)
        ("home/a/+/b", true),
        ("#", false),
        ("+/kitchen/temp", false),
        ("$SYS/#", false),
    ];
    let filters: Vec<(&str, u8)> = cases.iter().map(|(f, _)| (*f, 0)).collect();
    let codes = subscribe(&a, v, 1, &filters);
    for ((f, ok), code) in cases.iter().zip(&codes) {
        let want = if *ok { 0 } else { d };
        assert_eq!(*code, want, "{v:?}: subscribe {f:?} → 0x{code:02x}");
    }
    let denied = if v.v5() { 0x87 } else { 0x00 };
    for (topic, ok) in [
        ("sensors/x/temp", true),
        ("sensors/x/y/temp", false),
        ("sensors/temp", false),
        ("sensors/x/hum", false),
        ("home", true),
        ("home/a/b/c", true),
        ("house", false),
    ] {
        let r = publish_acked(&a, v, topic, b"v", 1, 9);
        if v.v5() {
            // 0x10 No matching subscribers is a success (< 0x80) too.
            assert_eq!(r < 0x80, ok, "{v:?}: publish {topic:?} → 0x{r:02x}");
        } else {
            assert_eq!(r, denied, "3.1.1 acks carry no reason");
        }
    }
    // Delivery through the wildcard subscriptions: pub writes everywhere.
    let p = login(b.mqtt, v, "c-pub", Some("pub"), Some("pub-pw"));
    for t in [
        "sensors/k/temp",
        "sensors/k/hum",
        "home/x/y",
        "home",
        "garden",
        "home/end",
    ] {
        publish_acked(&p, v, t, b"v", 1, 1);
    }
    let got = until_sentinel(&a, v, "home/end");
    let mut seen = topics(&got);
    seen.sort();
    seen.dedup();
    // alice's own allowed publishes above (no No Local) arrive too.
    assert_eq!(
        seen,
        vec![
            "home",
            "home/a/b/c",
            "home/end",
            "home/x/y",
            "sensors/k/temp",
            "sensors/x/temp"
        ],
        "{v:?}: exactly the readable topics"
    );
}

fn acl_deny_inside_wider(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("pub", "pub-pw")],
        &[
            &["--user", "alice", "readwrite", "a/#"],
            &["--user", "alice", "--deny", "read", "a/secret"],
            &["--user", "pub", "write", "a/#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    // The wider subscription is granted; the denied topic itself is not.
    assert_eq!(sub1(&a, v, 1, "a/#"), 1);
    assert_eq!(sub1(&a, v, 2, "a/secret"), v.suback_denied());
    assert_eq!(sub1(&a, v, 3, "a/+"), 1);
    let p = login(b.mqtt, v, "c-pub", Some("pub"), Some("pub-pw"));
    for (t, qos) in [
        ("a/public", 1),
        ("a/secret", 1),
        ("a/secret", 2),
        ("a/secret/below", 1), // the deny rule has no wildcard: deeper topics are readable
        ("a/end", 1),
    ] {
        assert!(publish_acked(&p, v, t, t.as_bytes(), qos, 1) < 0x80);
    }
    send(
        &p,
        &packet::publish(v.v5(), "a/secret", b"q0", 0, None, false, false),
    );
    // alice's own publish to a/secret is allowed (the deny is for reading) but not delivered back.
    assert!(publish_acked(&a, v, "a/secret", b"own", 1, 9) < 0x80);
    assert!(publish_acked(&p, v, "a/end", b"end2", 1, 2) < 0x80);
    let mut got = until_sentinel(&a, v, "a/end");
    // a/end matched two subscriptions; read on to the second sentinel (`end2`).
    let deadline = Instant::now() + WAIT;
    while !got.iter().any(|m| m.payload == b"end2") && Instant::now() < deadline {
        if let Some(m) = next_publish(&a, v, Duration::from_millis(200)) {
            got.push(m);
        }
    }
    assert!(got.iter().any(|m| m.payload == b"end2"), "second sentinel");
    let secret: Vec<&Pub> = got.iter().filter(|m| m.topic == "a/secret").collect();
    assert!(
        secret.is_empty(),
        "{v:?}: delivered on the denied topic: {secret:?}"
    );
    let seen = topics(&got);
    assert!(
        seen.contains(&"a/public") && seen.contains(&"a/secret/below"),
        "{v:?}: {seen:?}"
    );
}

fn acl_deny_retained(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("pub", "pub-pw")],
        &[
            &["--user", "alice", "read", "r/#"],
            &["--user", "alice", "--deny", "read", "r/secret"],
            &["--user", "pub", "write", "r/#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let p = login(b.mqtt, v, "c-pub", Some("pub"), Some("pub-pw"));
    for t in ["r/public", "r/secret"] {
        send(
            &p,
            &packet::publish(v.v5(), t, t.as_bytes(), 1, Some(1), true, false),
        );
        let (first, id, reason) = parse_ack(&read_packet(&p));
        assert_eq!((first, id), (0x40, 1));
        assert!(reason < 0x80);
    }
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    assert_eq!(sub1(&a, v, 1, "r/#"), 1);
    let mut got = Vec::new();
    while let Some(m) = next_publish(&a, v, QUIET) {
        got.push(m);
        assert!(got.len() < 10, "too many messages: {got:?}");
    }
    assert!(
        got.iter().all(|m| m.topic != "r/secret"),
        "{v:?}: retained message on a denied topic sent at subscribe: {:?}",
        got.iter().map(|m| (&m.topic, m.retain)).collect::<Vec<_>>()
    );
    assert!(
        got.iter().any(|m| m.topic == "r/public" && m.retain),
        "{v:?}: the readable retained message arrives: {got:?}"
    );
}

fn acl_live_changes(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("pub", "pub-pw")],
        &[
            &["--user", "alice", "read", "live/a"],
            &["--user", "pub", "write", "live/#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let a = login(b.mqtt, v, "c-alice", Some("alice"), Some("alice-pw"));
    let p = login(b.mqtt, v, "c-pub", Some("pub"), Some("pub-pw"));
    let d = v.suback_denied();
    assert_eq!(sub1(&a, v, 1, "live/a"), 1);
    assert_eq!(sub1(&a, v, 2, "live/b"), d);

    // 1. A read rule added → the subscription is granted.
    let rule_b = acl_add(&db.path, &["--user", "alice", "read", "live/b"]);
    poll_until("acl add read live/b", || sub1(&a, v, 3, "live/b") == 1);

    // Does a publish on `topic` reach alice? A sentinel with a unique payload on live/a (always
    // readable) tells "not delivered" from "late".
    let mut pid = 10u16;
    let mut delivered = |topic: &str| -> bool {
        pid += 2;
        let sentinel = format!("sentinel-{pid}");
        assert!(publish_acked(&p, v, topic, b"probe", 1, pid) < 0x80);
        assert!(publish_acked(&p, v, "live/a", sentinel.as_bytes(), 1, pid + 1) < 0x80);
        let got = until_payload(&a, v, sentinel.as_bytes());
        got.iter()
            .any(|m| m.topic == topic && m.payload == b"probe")
    };
    assert!(delivered("live/b"), "granted subscription delivers");

    // 2. A write rule added → alice may publish (seen by her own subscription to live/b).
    let denied = publish_acked(&a, v, "live/b", b"mine", 1, 100);
    if v.v5() {
        assert_eq!(denied, 0x87);
    }
    expect_nothing(&a, v, "denied publish of alice");
    acl_add(&db.path, &["--user", "alice", "write", "live/b"]);
    let mut n = 100u16;
    poll_until("acl add write live/b", || {
        n += 1;
        publish_acked(&a, v, "live/b", b"mine", 1, n);
        next_publish(&a, v, Duration::from_millis(300)).is_some_and(|m| m.payload == b"mine")
    });

    // 3. The read rule deleted → the existing subscription stops delivering.
    let out = admin(&db.path, &["acl", "del", &rule_b.to_string()], None);
    assert!(out.contains("deleted"), "{out}");
    poll_until("acl del (delivery on the old subscription stops)", || {
        !delivered("live/b")
    });
    // ... and a new subscription is refused.
    assert_eq!(sub1(&a, v, 4, "live/b"), d);

    // 4. A deny rule added at run time cuts an allowed topic.
    acl_add(&db.path, &["--user", "alice", "--deny", "read", "live/a/x"]);
    acl_add(&db.path, &["--user", "alice", "read", "live/a/#"]);
    assert_eq!(
        subscribe(&a, v, 5, &[("live/a/#", 1)]).len(),
        1,
        "subscribe runs either way"
    );
    poll_until("acl add --deny read live/a/x", || {
        // live/a/# granted (allow rule loaded) and live/a/x not delivered (deny loaded).
        sub1(&a, v, 6, "live/a/#") == 1 && !delivered("live/a/x")
    });
    assert!(delivered("live/a/y"), "the rest of live/a/# still delivers");
}

fn acl_will(v: V) {
    let db = db_with(
        &[("alice", "alice-pw"), ("watcher", "watcher-pw")],
        &[
            &["--user", "alice", "readwrite", "ok/#"],
            &["--user", "watcher", "read", "#"],
        ],
    );
    let b = Broker::start_with_db(&db.path, &[]);
    let w = login(b.mqtt, v, "c-watcher", Some("watcher"), Some("watcher-pw"));
    assert_eq!(subscribe(&w, v, 1, &[("#", 1)]), vec![1]);
    // alice may not publish to will/alice, so her will there must not be delivered: the broker
    // either refuses the CONNECT (0x87 / 5, as Mosquitto does) or drops the will.
    let (s, _, code) = open(
        b.mqtt,
        v,
        &connect_full(
            v,
            "c-alice",
            true,
            Some("alice"),
            Some(b"alice-pw"),
            &[],
            Some(("will/alice", b"forged will", 1)),
        ),
    );
    if code == 0 {
        // Abnormal end: the will would be published now (MQTT-3.1.2-8).
        s.shutdown(std::net::Shutdown::Both).unwrap();
        drop(s);
        // Logged once the broker is done with the connection, will included: a will that got
        // through would be queued to the watcher before the sentinel below.
        assert!(
            b.wait_for_log("client c-alice disconnected from", WAIT),
            "{v:?}: c-alice's end not logged"
        );
        let p = login(b.mqtt, v, "c-alice-2", Some("alice"), Some("alice-pw"));
        assert!(publish_acked(&p, v, "ok/end", b"end", 1, 1) < 0x80);
        let got = until_sentinel(&w, v, "ok/end");
        assert!(
            got.iter().all(|m| m.topic != "will/alice"),
            "{v:?}: a will on a topic its client may not publish to was delivered: {:?}",
            topics(&got)
        );
    } else {
        assert_eq!(
            code,
            v.connack_code(0x87),
            "{v:?}: refusal code for the will"
        );
    }
}

// ------------------------------------------------------- shared subscriptions (§4.8.2)

/// Accounts for the shared subscription tests: `alice` reads all of `s/#`; `mallory` may
/// subscribe to `s/#` but not read `s/secret`; `pub` writes `s/#`.
fn shared_acl_db() -> Db {
    db_with(
        &[
            ("alice", "alice-pw"),
            ("mallory", "mallory-pw"),
            ("pub", "pub-pw"),
        ],
        &[
            &["--user", "alice", "read", "s/#"],
            &["--user", "mallory", "read", "s/#"],
            &["--user", "mallory", "--deny", "read", "s/secret"],
            &["--user", "pub", "write", "s/#"],
        ],
    )
}

/// Payloads of every message on `s` until nothing arrives for `QUIET` (at most 100).
fn payloads_until_quiet(s: &TcpStream) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        match next_publish(s, V::V5, QUIET) {
            Some(m) => got.push(String::from_utf8_lossy(&m.payload).into_owned()),
            None => return got,
        }
    }
    panic!("more than 100 messages");
}

/// §4.8.2 with the ACL, publish path: a member the ACL does not let read the topic passes the
/// message to the next member of the group instead of losing it.
#[test]
fn mqtt_4_8_2_shared_member_refused_by_acl_passes_message_to_next_member() {
    let v = V::V5;
    let db = shared_acl_db();
    let b = Broker::start_with_db(&db.path, &[]);
    let m = login(b.mqtt, v, "sh-mallory", Some("mallory"), Some("mallory-pw"));
    let a = login(b.mqtt, v, "sh-alice", Some("alice"), Some("alice-pw"));
    for s in [&m, &a] {
        assert_eq!(sub1(s, v, 1, "$share/g/s/#"), 1);
    }
    let p = login(b.mqtt, v, "sh-pub", Some("pub"), Some("pub-pw"));
    let sent: Vec<String> = (0..10).map(|i| format!("secret-{i}")).collect();
    for (i, payload) in sent.iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        assert_eq!(
            publish_acked(&p, v, "s/secret", payload.as_bytes(), 1, id),
            0
        );
    }
    assert_eq!(
        payloads_until_quiet(&a),
        sent,
        "every message to the member that may read it"
    );
    expect_nothing(&m, v, "the member the ACL refuses");
}

/// §4.8.2 with the ACL, hand-off: when a member's session ends, the messages it had not
/// finished go round robin to the other members that may read them, never to one the ACL
/// refuses.
#[test]
fn mqtt_4_8_2_handoff_skips_member_refused_by_acl() {
    let v = V::V5;
    let db = shared_acl_db();
    let b = Broker::start_with_db(&db.path, &[]);
    // The holder: Receive Maximum 1 (property 0x21), so all but the first message wait for it.
    let (h, _, code) = open(
        b.mqtt,
        v,
        &connect_full(
            v,
            "sh-holder",
            true,
            Some("alice"),
            Some(b"alice-pw"),
            &[0x21, 0x00, 0x01],
            None,
        ),
    );
    assert_eq!(code, 0);
    assert_eq!(sub1(&h, v, 1, "$share/g/s/#"), 1);
    let p = login(b.mqtt, v, "sh-pub", Some("pub"), Some("pub-pw"));
    let sent: Vec<String> = (0..5).map(|i| format!("held-{i}")).collect();
    for (i, payload) in sent.iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        assert_eq!(
            publish_acked(&p, v, "s/secret", payload.as_bytes(), 1, id),
            0
        );
    }
    // The first is on the wire, left unacknowledged; the other four are queued.
    let first = read_packet(&h);
    assert_eq!(first[0] >> 4, 3, "expected PUBLISH, got {}", hex(&first));
    let m = login(b.mqtt, v, "sh-mallory", Some("mallory"), Some("mallory-pw"));
    let c = login(b.mqtt, v, "sh-alice-c", Some("alice"), Some("alice-pw"));
    let d = login(b.mqtt, v, "sh-alice-d", Some("alice"), Some("alice-pw"));
    for s in [&m, &c, &d] {
        assert_eq!(sub1(s, v, 1, "$share/g/s/#"), 1);
    }
    send(&h, &packet::disconnect_v5(0));
    expect_closed(&h, WAIT);
    assert!(b.wait_for_log("client sh-holder disconnected from", WAIT));
    let at_c = payloads_until_quiet(&c);
    let at_d = payloads_until_quiet(&d);
    expect_nothing(&m, v, "the member the ACL refuses");
    assert!(
        !at_c.is_empty() && !at_d.is_empty(),
        "not round robin: C got {at_c:?}, D got {at_d:?}"
    );
    let mut all: Vec<String> = at_c.into_iter().chain(at_d).collect();
    all.sort_unstable();
    assert_eq!(all, sent, "each handed-on message once");
}
