//! `mqtt5-broker import mosquitto`: password files made by Debian's real `mosquitto_passwd`
//! (both hash kinds it offers), real acl files, and a differential test against Debian's real
//! `mosquitto` broker with the same acl file.

mod common;

use common::mosquitto::Mosquitto;
use common::*;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// `mosquitto_passwd [-H KIND] -b FILE NAME PASSWORD` (Debian's tool, run for real).
fn mosquitto_passwd(file: &Path, kind: &str, name: &str, password: &str) {
    if !file.exists() {
        std::fs::write(file, "").expect("create the password file");
    }
    let out = Command::new("mosquitto_passwd")
        .args(["-H", kind, "-b"])
        .arg(file)
        .args([name, password])
        .output()
        .expect("run mosquitto_passwd (Debian package mosquitto)");
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
}

/// The users every test uses: two with Mosquitto's default PBKDF2 (`$7$`), one with the older
/// salted SHA-512 (`$6$`).
const USERS: &[(&str, &str, &str)] = &[
    ("alice", "sha512-pbkdf2", "alice-pw"),
    ("bob", "sha512", "bob-pw"),
    ("carol", "sha512-pbkdf2", "carol-pw"),
];

fn passwd_file(dir: &Path) -> PathBuf {
    let file = dir.join("passwd");
    for (name, kind, pw) in USERS {
        mosquitto_passwd(&file, kind, name, pw);
    }
    file
}

fn import(db: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["import", "mosquitto"];
    all.extend_from_slice(args);
    run_admin(db, &all, None, LIMIT)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// CONNECT with a username and password; the CONNACK's code (≤ 5 s).
fn connack(addr: SocketAddr, id: &str, user: &str, pw: &str) -> ConnectReturnCode {
    let mut o = rq5::options(addr, id);
    o.set_credentials(user, pw);
    let (_client, mut conn) = Client::new(o, 16);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return ack.code,
            Ok(Err(rumqttc::v5::ConnectionError::ConnectionRefused(code))) => return code,
            Ok(Ok(_)) => {}
            other => panic!("{id}: no CONNACK: {other:?}"),
        }
    }
}

/// Every user of a file made by the real `mosquitto_passwd` (PBKDF2-SHA512 `$7$` and salted
/// SHA-512 `$6$`) logs in to our broker with the password it had; the stored hash is replaced
/// by argon2id at that login, and after a restart the argon2id hash still takes the right
/// password and refuses a wrong one.
#[test]
fn every_imported_user_logs_in_with_its_mosquitto_password_and_gets_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let out = import(&db, &["--passwd", passwd.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM users WHERE password_hash LIKE '$7$101$%'"
        ),
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM users WHERE password_hash LIKE '$6$%'"
        ),
        1
    );

    let mut b = Broker::start_with_db(&db, &[]);
    for (name, _, pw) in USERS {
        assert_eq!(
            connack(b.mqtt, &format!("wrong-{name}"), name, "not-it"),
            ConnectReturnCode::BadUserNamePassword,
            "{name}: a wrong password against the Mosquitto hash"
        );
        assert_eq!(
            connack(b.mqtt, &format!("c-{name}"), name, pw),
            ConnectReturnCode::Success,
            "{name}: the password it had in Mosquitto"
        );
        b.await_db(
            &format!("{name}'s hash becomes argon2id at that login"),
            &format!("SELECT count(*) FROM users WHERE name = '{name}' AND password_hash LIKE '$argon2id$%'"),
            1,
        );
    }
    b.terminate();
    let b = Broker::start_with_db(&db, &[]);
    for (name, _, pw) in USERS {
        assert_eq!(
            connack(b.mqtt, &format!("again-{name}"), name, pw),
            ConnectReturnCode::Success
        );
        assert_eq!(
            connack(b.mqtt, &format!("bad-{name}"), name, "alice-pw-no"),
            ConnectReturnCode::BadUserNamePassword
        );
    }
}

/// Bad lines are reported as `file:line: why` and skipped; the good lines around them are
/// imported.
#[test]
fn bad_lines_are_reported_with_file_and_line_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let mut extra = std::fs::read_to_string(&passwd).unwrap();
    extra.push_str("no colon here\nplain:text-password\nweird:$2y$10$bcrypt\n");
    std::fs::write(&passwd, extra).unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic read anon/#\nuser alice\ntopic readwrite alice/#\ntopic write a/#/b\nfrobnicate x\n",
    )
    .unwrap();
    let out = import(
        &db,
        &[
            "--passwd",
            passwd.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let p = passwd.display();
    let a = acl.display();
    for needle in [
        format!("{p}:4: not a name:hash line"),
        format!("{p}:5: user \"plain\": the password is not hashed"),
        format!("{p}:6: user \"weird\":"),
        format!("{a}:1: a topic line before the first 'user' line"),
        format!("{a}:4: \"a/#/b\": '#' must be a whole level"),
        format!("{a}:5: unknown line \"frobnicate\""),
    ] {
        assert!(stdout.contains(&needle), "missing {needle:?} in:\n{stdout}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM users"), 3, "{stdout}");
    assert_eq!(count(&db, "SELECT count(*) FROM acl"), 1, "{stdout}");
}

/// A fatal error (here: the config file to write exists already; then an acl file that
/// cannot be read) stores nothing at all, not even the accounts read before it.
#[test]
fn a_fatal_error_imports_nothing_and_never_overwrites_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        "listener 1884\npassword_file passwd\nmax_keepalive 120\n",
    )
    .unwrap();
    let ours = dir.path().join("ours.conf");
    std::fs::write(&ours, "# mine\n").unwrap();
    let out = import(
        &db,
        &[
            "--conf",
            conf.to_str().unwrap(),
            "--config",
            ours.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("exists already"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), "# mine\n");
    assert!(!db.exists(), "nothing stored");

    let out = import(
        &db,
        &[
            "--passwd",
            passwd.to_str().unwrap(),
            "--acl",
            dir.path().join("missing").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!db.exists(), "nothing stored");

    // The same conf with a new file: written, and the broker starts on it.
    std::fs::remove_file(&ours).unwrap();
    let out = import(
        &db,
        &[
            "--conf",
            conf.to_str().unwrap(),
            "--config",
            ours.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&ours).unwrap();
    assert!(
        written.contains("\nmax_keepalive 120\n") && written.contains("\nlistener 1884\n"),
        "{written}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM users"), 3);
}

/// `--dry-run` reports the same but creates no database, changes none, writes no config file.
#[test]
fn dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    passwd_file(dir.path());
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic alice/#\n").unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        "password_file passwd\nacl_file acl\nsys_interval 30\n",
    )
    .unwrap();
    let ours = dir.path().join("ours.conf");
    let args = [
        "--conf",
        conf.to_str().unwrap(),
        "--config",
        ours.to_str().unwrap(),
        "--dry-run",
    ];
    let out = import(&db, &args);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("user alice"), "{out:?}");
    assert!(!db.exists() && !ours.exists(), "dry run on nothing");

    let out = run_admin(&db, &["acl", "add", "read", "x/#"], None, LIMIT);
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read(&db).unwrap();
    let out = import(&db, &args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM users"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM acl"), 1);
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is unchanged");
    assert!(!ours.exists());
}

/// Debian's real mosquitto broker with these users and ACL (`common::mosquitto`).
fn mosquitto_with(passwd: &Path, acl: &Path) -> Mosquitto {
    Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\npersistence false",
        passwd.display(),
        acl.display()
    ))
}

/// A connected client with `user`'s password; `sync/#` subscribed.
fn client(addr: SocketAddr, id: &str, user: &str) -> (Client, Connection) {
    let pw = USERS.iter().find(|u| u.0 == user).unwrap().2;
    let mut o = rq5::options(addr, id);
    o.set_credentials(user, pw);
    rq5::connect(o)
}

/// Waits for the ack of the last request (SUBACK or PUBACK, whatever its codes); false when
/// it refused a subscription or a publish (rumqttc reports those as errors, and its connection
/// ends).
fn acked(conn: &mut Connection, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_)))) => return true,
            Ok(Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::SubFail { .. }
                | rumqttc::v5::StateError::PubAckFail { .. },
            ))) => return false,
            Ok(Ok(_)) => {}
            other => panic!("{what}: no ack: {other:?}"),
        }
    }
}

/// Was a message that `publisher` publishes to `topic` delivered to `subscriber`, subscribed
/// to exactly `topic`? After the probe, the publisher publishes to `sync/…` (open to all in
/// the acl file), which the subscriber also subscribed: the same publisher's messages arrive
/// in order, so once the sync message is in, the probe would have been too.
fn delivered(addr: SocketAddr, subscriber: &str, publisher: &str, topic: &str, n: usize) -> bool {
    let (sub, mut sub_conn) = client(addr, &format!("s{n}-{subscriber}"), subscriber);
    let sync = format!("sync/{n}");
    sub.subscribe(&sync, QoS::AtLeastOnce).unwrap();
    assert!(
        acked(&mut sub_conn, "subscribe sync"),
        "case {n}: sync/# is open to all"
    );
    sub.subscribe(topic, QoS::AtLeastOnce).unwrap();
    if !acked(&mut sub_conn, "subscribe") {
        // A refused subscription delivers nothing (MQTT-3.9.3: 0x87 grants no subscription).
        return false;
    }
    let (publ, mut pub_conn) = client(addr, &format!("p{n}-{publisher}"), publisher);
    publ.publish(topic, QoS::AtLeastOnce, false, "probe")
        .unwrap();
    acked(&mut pub_conn, "probe");
    publ.publish(&sync, QoS::AtLeastOnce, false, "sync")
        .unwrap();
    acked(&mut pub_conn, "sync");
    let mut got = false;
    loop {
        let p = rq5::next_publish(&mut sub_conn, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("case {n}: the sync message never came"));
        if p.topic == sync.as_bytes() {
            return got;
        }
        got |= p.topic == topic.as_bytes();
    }
}

const DIFF_ACL: &str = "\
# The anonymous section is not carried over; anonymous clients are refused on both brokers.
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
topic read bob/status
user bob
topic readwrite bob/#
topic read alice/+/temp
user carol
topic write public/news
pattern readwrite sync/#
pattern readwrite home/%u/#
pattern read public/#
";

/// The same acl file and password file (made by the real tools) given to Debian's mosquitto
/// and imported into ours: the same clients publish and subscribe to the same topics and
/// every message is delivered, or not, alike on both. The expected column is checked too, so
/// the table exercises both outcomes (user rules, read vs write, deny, + in a rule, `pattern`
/// with %u, exact subscriptions; see README "Coming from Mosquitto" for where they differ).
#[test]
fn imported_acl_delivers_and_refuses_like_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let acl = dir.path().join("acl");
    std::fs::write(&acl, DIFF_ACL).unwrap();
    let out = import(
        &db,
        &[
            "--passwd",
            passwd.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let ours = Broker::start_with_db(&db, &["--max-clients", "200"]);
    let theirs = mosquitto_with(&passwd, &acl);
    let cases: &[(&str, &str, &str, bool)] = &[
        ("bob", "alice", "alice/x/temp", true),
        ("bob", "alice", "alice/x/humidity", false),
        ("alice", "alice", "alice/secret", false),
        ("alice", "alice", "alice/open", true),
        ("bob", "alice", "bob/status", false),
        ("alice", "bob", "bob/status", true),
        ("alice", "carol", "public/news", true),
        ("alice", "bob", "public/news", false),
        ("carol", "carol", "public/news", true),
        ("carol", "carol", "public/other", false),
        ("bob", "bob", "home/bob/lamp", true),
        ("alice", "bob", "home/alice/lamp", false),
        ("alice", "alice", "home/alice/lamp", true),
    ];
    let mut table = String::new();
    let mut mismatch = false;
    for (n, (s, p, topic, want)) in cases.iter().enumerate() {
        let a = delivered(theirs.addr, s, p, topic, n);
        let b = delivered(ours.mqtt, s, p, topic, n);
        mismatch |= a != b || a != *want;
        table.push_str(&format!(
            "{p} → {s} on {topic}: mosquitto {a}, ours {b}, expected {want}\n"
        ));
    }
    assert!(!mismatch, "outcomes differ:\n{table}");
}

/// A `$7$` hash costs far less to check than argon2id, so the per-address backoff must still
/// stand in front of it: after 3 wrong passwords (`login::FREE_FAILURES`) the next attempt from
/// that address, even with the right password, is not checked (CONNACK 0x9F) until the wait
/// of 1 s is over; then the right password logs in.
#[test]
fn wrong_passwords_against_a_mosquitto_hash_are_throttled_like_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let out = import(&db, &["--passwd", passwd.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let b = Broker::start_with_db(&db, &[]);
    for i in 0..3 {
        assert_eq!(
            connack(
                b.mqtt,
                &format!("guess-{i}"),
                "alice",
                &format!("guess-{i}")
            ),
            ConnectReturnCode::BadUserNamePassword
        );
    }
    assert_eq!(
        connack(b.mqtt, "right-too-soon", "alice", "alice-pw"),
        ConnectReturnCode::ConnectionRateExceeded,
        "the 4th attempt within the wait is not checked"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        match connack(b.mqtt, &format!("right-{n}"), "alice", "alice-pw") {
            ConnectReturnCode::Success => break,
            ConnectReturnCode::ConnectionRateExceeded if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("after the wait: {other:?}"),
        }
    }
}

/// A wrong password for an imported account (a `$7$` hash checks in well under a millisecond)
/// is not refused much faster than an unknown user name (an argon2id check of a dummy hash):
/// otherwise the refusal time would tell which accounts exist. Logins of another user in
/// between clear the address's wrong-password count, so no attempt is throttled.
#[test]
fn a_wrong_password_for_an_imported_account_takes_as_long_as_an_unknown_user() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let passwd = passwd_file(dir.path());
    let out = import(&db, &["--passwd", passwd.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let b = Broker::start_with_db(&db, &[]);
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        let t = Instant::now();
        let code = connack(b.mqtt, &format!("w{i}"), "alice", &format!("no-{i}"));
        wrong.push(t.elapsed());
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        let t = Instant::now();
        let code = connack(b.mqtt, &format!("u{i}"), "nobody", &format!("no-{i}"));
        unknown.push(t.elapsed());
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        // carol logs in (argon2id after her first login): clears the count.
        assert_eq!(
            connack(b.mqtt, &format!("c{i}"), "carol", "carol-pw"),
            ConnectReturnCode::Success
        );
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[4], unknown[4]);
    eprintln!("median refusal: imported account {w:?}, unknown user {u:?}");
    assert!(
        w * 4 >= u,
        "a wrong password for a $7$ account is refused in {w:?} (median), an unknown user in \
         {u:?}: account names can be probed by timing"
    );
}
