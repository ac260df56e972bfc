//! Bridges (issue #15) against real brokers on 127.0.0.1: Debian's Mosquitto (started by the
//! test with its own config, see `common::mosquitto`) and our own binary, configured with
//! Mosquitto's `connection` blocks. Clients are raw sockets, so every delivery is counted: a
//! loop or a duplicate shows as an extra PUBLISH, a loss as a missing one.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::flow::{parse_publish, raw_v311, raw_v5, sub_v5, subscribe_v311, Pub};
use common::mosquitto::Mosquitto;
use common::{finish_packet, packet, read_packet, send, web, Broker};

/// How long a message may take across a bridge here.
const CROSSING: Duration = Duration::from_secs(10);
/// Silence that says nothing more is coming (a loop would show well within it).
const QUIET: Duration = Duration::from_millis(1500);

/// A config file for our broker: anonymous access and `bridge`, in a temp dir kept alive by
/// the returned guard.
fn our_config(bridge: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqtt5-broker.conf");
    std::fs::write(&path, format!("allow_anonymous true\n{bridge}\n")).unwrap();
    (dir, path)
}

/// Our broker bridged by `block` (a `connection` block).
fn bridged(block: &str) -> (Broker, tempfile::TempDir) {
    bridged_with(block, &[])
}

fn bridged_with(block: &str, args: &[&str]) -> (Broker, tempfile::TempDir) {
    let (dir, conf) = our_config(block);
    let mut all = vec!["--config", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    let broker = Broker::start(&all);
    (broker, dir)
}

const ADMIN_PW: &str = "bridge-admin";

/// `GET path` on our web listener as the admin.
fn web_get(b: &Broker, path: &str) -> web::Answer {
    web::request(
        b.web,
        "GET",
        path,
        &[web::basic("admin", ADMIN_PW)],
        CROSSING,
    )
}

/// `POST path` with the JSON `body` on our web listener as the admin.
fn web_post(b: &Broker, path: &str, body: &str) -> web::Answer {
    web::post_json(
        b.web,
        path,
        &[web::basic("admin", ADMIN_PW)],
        body,
        CROSSING,
    )
}

/// `GET /api/bridges`' items.
fn bridges_api(b: &Broker) -> Vec<serde_json::Value> {
    let answer = web_get(b, "/api/bridges");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["items"].as_array().unwrap().clone()
}

/// Polls `/api/bridges` until the first bridge's `state` is `want` (≤ `CROSSING`).
fn await_state(b: &Broker, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + CROSSING;
    loop {
        let first = bridges_api(b)[0].clone();
        if first["state"] == want {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "state {want} never came: {first}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn await_log(b: &Broker, needle: &str) {
    assert!(
        b.wait_for_log(needle, CROSSING),
        "no {needle:?} in our log:\n{}",
        b.log()
    );
}

/// Reads PUBLISHes, acknowledging each as its QoS asks (and answering PUBREL), until `n` have
/// arrived and then nothing more for [`QUIET`] (bounded by `CROSSING` + `QUIET`).
fn collect(s: &TcpStream, v5: bool, n: usize) -> Vec<Pub> {
    let mut got = Vec::new();
    let deadline = Instant::now() + CROSSING;
    let end = deadline + QUIET;
    loop {
        let now = Instant::now();
        let wait = if now >= end || (got.len() < n && now >= deadline) {
            return got;
        } else if got.len() >= n {
            QUIET.min(end - now)
        } else {
            deadline - now
        };
        s.set_read_timeout(Some(wait)).unwrap();
        let mut first = [0u8; 1];
        let r = std::io::Read::read(&mut &*s, &mut first);
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        match r {
            Ok(1) => {}
            _ if got.len() >= n => return got,
            Ok(_) => panic!("connection closed after {} publishes", got.len()),
            Err(_) => continue,
        }
        let pkt = finish_packet(s, first[0]);
        match pkt[0] >> 4 {
            3 => {
                let p = parse_publish(&pkt, v5);
                match (p.qos, p.packet_id) {
                    (1, Some(id)) => send(s, &packet::puback(id)),
                    (2, Some(id)) => send(s, &packet::pubrec(id)),
                    _ => {}
                }
                got.push(p);
            }
            6 => {
                let id = u16::from_be_bytes([pkt[2], pkt[3]]);
                send(s, &packet::pubcomp(id));
            }
            _ => {}
        }
    }
}

/// Publishes with `qos`, completing its acknowledgement flow.
fn publish(s: &TcpStream, v5: bool, topic: &str, payload: &str, qos: u8, id: u16, retain: bool) {
    let pid = (qos > 0).then_some(id);
    send(
        s,
        &packet::publish(v5, topic, payload.as_bytes(), qos, pid, retain, false),
    );
    match qos {
        1 => assert_eq!(read_packet(s)[0], 0x40, "PUBACK"),
        2 => {
            assert_eq!(read_packet(s)[0], 0x50, "PUBREC");
            send(s, &packet::pubrel(id));
            assert_eq!(read_packet(s)[0], 0x70, "PUBCOMP");
        }
        _ => {}
    }
}

/// A raw 3.1.1 subscriber to `filters` (requested QoS 2) on `addr`.
fn subscriber_v311(addr: SocketAddr, id: &str, clean: bool, filters: &[&str]) -> TcpStream {
    let s = raw_v311(addr, id, clean);
    let f: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 2)).collect();
    send(&s, &subscribe_v311(1, &f));
    assert_eq!(read_packet(&s)[0], 0x90, "SUBACK");
    s
}

/// A raw 5.0 subscriber to `filters` (QoS 2) on `addr`.
fn subscriber_v5(addr: SocketAddr, id: &str, filters: &[&str]) -> TcpStream {
    let (s, _) = raw_v5(addr, id, true, &[]);
    let f: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 2)).collect();
    sub_v5(&s, 1, None, &f);
    s
}

fn summary(got: &[Pub]) -> Vec<(String, String, u8, bool)> {
    got.iter()
        .map(|p| {
            (
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
            )
        })
        .collect()
}

/// `out`, `in` and `both` topics with prefixes and every QoS, between our broker and a
/// Mosquitto remote speaking `protocol`. Each message arrives once on the other side, with its
/// QoS and retain flag; `both` with the same topic on both sides loops nowhere (each side's
/// subscriber sees each message once).
fn forwards_every_direction(protocol: &str) {
    let remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let block = format!(
        "connection garage\naddress {}\nbridge_protocol_version {protocol}\n\
         topic sensors/# out 2 house/ site1/\ntopic cmd/# in 2 house/ ctl/\ntopic shared/# both 2\n\
         restart_timeout 1\nnotifications false",
        remote.addr
    );
    let (ours, _conf) = bridged(&block);
    await_log(&ours, "bridge garage: connected to");
    let r_sub = subscriber_v311(
        remote.addr,
        "r-sub",
        true,
        &["site1/#", "shared/#", "house/#"],
    );
    let o_sub = subscriber_v5(
        ours.mqtt,
        "o-sub",
        &["house/cmd/#", "shared/#", "ctl/#", "site1/#"],
    );
    let r_pub = raw_v311(remote.addr, "r-pub", true);
    let (o_pub, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);

    for qos in 0..=2u8 {
        publish(
            &o_pub,
            true,
            "house/sensors/t",
            &format!("out{qos}"),
            qos,
            10 + u16::from(qos),
            false,
        );
        publish(
            &r_pub,
            false,
            "ctl/cmd/light",
            &format!("in{qos}"),
            qos,
            20 + u16::from(qos),
            false,
        );
    }
    publish(&o_pub, true, "shared/a", "from-ours", 1, 30, false);
    publish(&r_pub, false, "shared/b", "from-mosquitto", 1, 31, false);

    let at_remote = summary(&collect(&r_sub, false, 5));
    let at_ours = summary(&collect(&o_sub, true, 5));
    let msg = |t: &str, p: &str, q: u8| (t.to_owned(), p.to_owned(), q, false);
    let mut want_remote = vec![
        msg("site1/sensors/t", "out0", 0),
        msg("site1/sensors/t", "out1", 1),
        msg("site1/sensors/t", "out2", 2),
        msg("shared/a", "from-ours", 1),
        msg("shared/b", "from-mosquitto", 1),
    ];
    let mut want_ours = vec![
        msg("house/cmd/light", "in0", 0),
        msg("house/cmd/light", "in1", 1),
        msg("house/cmd/light", "in2", 2),
        msg("shared/a", "from-ours", 1),
        msg("shared/b", "from-mosquitto", 1),
    ];
    let (mut at_remote, mut at_ours) = (at_remote, at_ours);
    for v in [
        &mut at_remote,
        &mut at_ours,
        &mut want_remote,
        &mut want_ours,
    ] {
        v.sort();
    }
    assert_eq!(
        at_remote,
        want_remote,
        "at Mosquitto\n--- our log ---\n{}",
        ours.log()
    );
    assert_eq!(
        at_ours,
        want_ours,
        "at ours\n--- our log ---\n{}",
        ours.log()
    );

    // Retained: carried as retained, and given to a subscriber arriving later.
    publish(&o_pub, true, "house/sensors/kept", "r-out", 1, 40, true);
    publish(&r_pub, false, "ctl/cmd/kept", "r-in", 1, 41, true);
    let _ = collect(&r_sub, false, 1);
    let _ = collect(&o_sub, true, 1);
    let late_r = subscriber_v311(remote.addr, "late-r", true, &["site1/sensors/kept"]);
    let late_o = subscriber_v5(ours.mqtt, "late-o", &["house/cmd/kept"]);
    assert_eq!(
        summary(&collect(&late_r, false, 1)),
        vec![("site1/sensors/kept".to_owned(), "r-out".to_owned(), 1, true)]
    );
    assert_eq!(
        summary(&collect(&late_o, true, 1)),
        vec![("house/cmd/kept".to_owned(), "r-in".to_owned(), 1, true)]
    );
}

#[test]
fn bridge_forwards_out_in_both_with_prefixes_qos_0_1_2_and_retain_to_a_5_0_mosquitto() {
    forwards_every_direction("mqttv50");
}

#[test]
fn bridge_forwards_out_in_both_with_prefixes_qos_0_1_2_and_retain_to_a_3_1_1_mosquitto() {
    forwards_every_direction("mqttv311");
}

/// A Mosquitto remote with persistence (its subscribers' sessions survive its restart) and
/// our broker bridged to it with `out` QoS 1, reconnecting after 1 s.
fn persistent_remote_and_bridge() -> (Mosquitto, Broker, tempfile::TempDir) {
    let remote = Mosquitto::start("allow_anonymous true\npersistence true\nautosave_interval 1");
    let block = format!(
        "connection garage\naddress {}\nbridge_protocol_version mqttv50\ntopic q/# out 1\n\
         restart_timeout 1",
        remote.addr
    );
    let (ours, conf) = bridged(&block);
    await_log(&ours, "bridge garage: connected to");
    (remote, ours, conf)
}

/// `n` QoS 1 messages q/0.. published here while the remote is stopped.
fn publish_while_down(ours: &Broker, n: usize) {
    let (p, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    for i in 0..n {
        publish(&p, true, "q/m", &format!("m{i}"), 1, 1 + i as u16, false);
    }
}

fn payloads(got: &[Pub]) -> Vec<String> {
    got.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// Link cut: the remote stopped (by PID) while QoS 1 messages are published here; restarted on
/// the same port, it gets every message once, in order — they waited in the bridge's
/// persistent local session.
#[test]
fn bridge_link_cut_queues_qos1_and_delivers_each_once_in_order_when_the_remote_returns() {
    link_cut_delivers_each_once_in_order(false);
}

/// The same with our broker killed (-9) while the link is down: the queue is in the database,
/// restored with the session, and delivered once, in order, when both are back.
#[test]
fn bridge_queue_survives_kill_9_of_our_broker_while_the_link_is_down() {
    link_cut_delivers_each_once_in_order(true);
}

/// 20 QoS 1 messages published here while the remote is stopped (and, with `crash`, our
/// broker killed -9 and restarted meanwhile) reach the remote's subscriber once, in order.
fn link_cut_delivers_each_once_in_order(crash: bool) {
    let (mut remote, mut ours, _conf) = persistent_remote_and_bridge();
    let r_sub = subscriber_v311(remote.addr, "r-sub", false, &["q/#"]);
    drop(r_sub);
    remote.stop();
    await_log(&ours, "bridge garage: link down");
    publish_while_down(&ours, 20);
    if crash {
        ours.crash_restart();
    }
    remote.restart();
    let r_sub = subscriber_v311(remote.addr, "r-sub", false, &["q/#"]);
    let got = payloads(&collect(&r_sub, false, 20));
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "--- our log ---\n{}", ours.log());
}

/// Fail-over: the first address refuses connections (a port nobody listens on), the second
/// is Mosquitto; the bridge ends up on the second and forwards.
#[test]
fn bridge_fails_over_to_the_second_address() {
    let remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let block = format!(
        "connection garage\naddress {closed} {}\ntopic f/# out 1\nrestart_timeout 1\n\
         notifications false",
        remote.addr
    );
    let (ours, _conf) = bridged(&block);
    await_log(
        &ours,
        &format!("bridge garage: connected to {}", remote.addr),
    );
    assert!(
        ours.log()
            .contains(&format!("bridge garage: cannot connect to {closed}")),
        "the first address was tried first:\n{}",
        ours.log()
    );
    let r_sub = subscriber_v311(remote.addr, "r-sub", true, &["f/#"]);
    let (p, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    publish(&p, true, "f/x", "over", 1, 1, false);
    assert_eq!(
        payloads(&collect(&r_sub, false, 1)),
        vec!["over".to_owned()]
    );
}

/// Bad credentials: the remote refuses the CONNECT; the bridge says so in the log (naming the
/// settings to fix) and keeps retrying on its backoff.
#[test]
fn bridge_refused_for_bad_credentials_is_logged_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["bridge", "right"])
        .status()
        .expect("mosquitto_passwd (Debian package mosquitto)");
    assert!(made.success());
    let remote = Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\npersistence false",
        passwd.display()
    ));
    let block = format!(
        "connection garage\naddress {}\ntopic c/# out 1\nremote_username bridge\n\
         remote_password wrong\nrestart_timeout 1",
        remote.addr
    );
    let (ours, _conf) = bridged_with(&block, &["--admin-password", ADMIN_PW]);
    await_log(&ours, "refused: bad remote_username / remote_password");
    let garage = &bridges_api(&ours)[0];
    assert_eq!(garage["state"], "down", "{garage}");
    assert!(
        garage["why"]
            .as_str()
            .is_some_and(|w| w.contains("bad remote_username / remote_password")),
        "the page says why: {garage}"
    );
    let first = ours.log().matches("bad remote_username").count();
    let deadline = Instant::now() + CROSSING;
    while ours.log().matches("bad remote_username").count() <= first {
        assert!(Instant::now() < deadline, "not retried:\n{}", ours.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Mosquitto bridge with its default settings (3.1.1, `try_private true`: the bridge bit in
/// the CONNECT's protocol level) connecting to us with a `both` topic: messages and retained
/// messages cross both ways, each delivered once (No Local for the bridge's subscription, as
/// Mosquitto gives it), retained kept retained (Retain As Published).
#[test]
fn mosquitto_bridge_with_default_settings_to_ours_both_topics_and_retained_loop_nowhere() {
    let ours = Broker::start(&["--allow-anonymous"]);
    let remote = Mosquitto::start(&format!(
        "allow_anonymous true\npersistence false\nconnection tous\naddress {}\ntopic b/# both 1",
        ours.mqtt
    ));
    await_log(&ours, "(MQTT 3.1.1, bridge,");
    // Mosquitto subscribes on us right after its CONNACK: probe until a message crosses.
    let r_sub = subscriber_v311(remote.addr, "r-sub", true, &["b/#"]);
    let (o_pub, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    let deadline = Instant::now() + CROSSING;
    loop {
        publish(&o_pub, true, "b/probe", "x", 0, 0, false);
        if common::try_read_packet(&r_sub, Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Mosquitto bridge forwards nothing"
        );
    }
    collect(&r_sub, false, 0);
    let o_sub = subscriber_v5(ours.mqtt, "o-sub", &["b/#"]);
    let r_pub = raw_v311(remote.addr, "r-pub", true);
    publish(&o_pub, true, "b/ours", "1", 1, 1, true);
    publish(&r_pub, false, "b/theirs", "2", 1, 2, true);
    let mut at_ours = summary(&collect(&o_sub, true, 2));
    let mut at_remote = summary(&collect(&r_sub, false, 2));
    at_ours.sort();
    at_remote.sort();
    let want = vec![
        ("b/ours".to_owned(), "1".to_owned(), 1, false),
        ("b/theirs".to_owned(), "2".to_owned(), 1, false),
    ];
    assert_eq!(at_ours, want, "at ours:\n{}", ours.log());
    assert_eq!(at_remote, want, "at Mosquitto:\n{}", remote.log());
    // Retained on both brokers: a late subscriber on each side gets both, retained.
    let mut late_o = summary(&collect(
        &subscriber_v5(ours.mqtt, "late-o", &["b/ours", "b/theirs"]),
        true,
        2,
    ));
    let mut late_r = summary(&collect(
        &subscriber_v311(remote.addr, "late-r", true, &["b/ours", "b/theirs"]),
        false,
        2,
    ));
    late_o.sort();
    late_r.sort();
    let kept = vec![
        ("b/ours".to_owned(), "1".to_owned(), 1, true),
        ("b/theirs".to_owned(), "2".to_owned(), 1, true),
    ];
    assert_eq!(late_o, kept, "retained at ours");
    assert_eq!(late_r, kept, "retained at Mosquitto");
}

/// `notifications` (on by default, as in Mosquitto): `$SYS/broker/connection/NAME/state` is 1
/// while the link is up and 0 when it is down, retained, here and on the remote (where the
/// 0 is the bridge's will, so a crash of ours says it too). The page's `/api/bridges`,
/// `/metrics` and `$SYS` follow the link, and the page stops and starts the bridge.
#[test]
fn bridge_notifications_status_api_metrics_sys_and_stop_start() {
    let mut remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let block = format!(
        "connection garage\naddress {}\ntopic n/# out 1\nrestart_timeout 1",
        remote.addr
    );
    let (mut ours, _conf) = bridged_with(
        &block,
        &["--admin-password", ADMIN_PW, "--sys-interval", "1"],
    );
    let state = "$SYS/broker/connection/garage/state";
    let up = await_state(&ours, "up");
    assert_eq!(up["address"], remote.addr.to_string(), "{up}");
    assert!(
        up["local_client_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("local.")),
        "{up}"
    );
    let value = |s: &TcpStream, v5: bool| {
        let got = collect(s, v5, 1);
        assert!(got.iter().all(|p| p.topic == state), "{:?}", summary(&got));
        got.last()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
    };
    // Subscribed after the link came up: the 1 reaches them because it is retained.
    let o_sub = subscriber_v5(ours.mqtt, "o-sub", &[state]);
    assert_eq!(value(&o_sub, true).as_deref(), Some("1"), "here, while up");
    let r_sub = subscriber_v311(remote.addr, "r-sub", true, &[state]);
    assert_eq!(
        value(&r_sub, false).as_deref(),
        Some("1"),
        "on the remote, while up"
    );

    // Counted and shown: one message out.
    let (p, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    publish(&p, true, "n/1", "x", 1, 1, false);
    let deadline = Instant::now() + CROSSING;
    while bridges_api(&ours)[0]["forwarded_out"] != 1 {
        assert!(Instant::now() < deadline, "{}", bridges_api(&ours)[0]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = web_get(&ours, "/metrics").text();
    assert!(
        metrics.contains("mqtt5_bridge_up{bridge=\"garage\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mqtt5_bridge_forwarded_out_total{bridge=\"garage\"} 1"),
        "{metrics}"
    );
    let sys = subscriber_v5(
        ours.mqtt,
        "sys-sub",
        &["$SYS/broker/bridges/garage/forwarded/out"],
    );
    assert_eq!(
        payloads(&collect(&sys, true, 1)).last().map(String::as_str),
        Some("1"),
        "$SYS counts"
    );

    // The remote goes away: 0 here, and the page says down and why.
    remote.stop();
    assert_eq!(value(&o_sub, true).as_deref(), Some("0"), "here, once down");
    let down = await_state(&ours, "down");
    assert!(
        down["why"].as_str().is_some_and(|w| !w.is_empty()),
        "{down}"
    );
    // Back: 1 again on both sides.
    remote.restart();
    assert_eq!(value(&o_sub, true).as_deref(), Some("1"), "here, up again");
    await_state(&ours, "up");

    // Stopped from the page: down here, and stopped on the page; started again: up.
    let answer = web_post(&ours, "/api/bridges/stop", r#"{"name":"garage"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        value(&o_sub, true).as_deref(),
        Some("0"),
        "here, once stopped"
    );
    let stopped = await_state(&ours, "stopped");
    assert_eq!(stopped["running"], false, "{stopped}");
    let answer = web_post(&ours, "/api/bridges/start", r#"{"name":"garage"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    await_state(&ours, "up");
    let answer = web_post(&ours, "/api/bridges/stop", r#"{"name":"nope"}"#);
    assert_eq!(answer.status, 404);

    // Our broker crashes: the remote hears 0 from the bridge's will.
    let r_sub = subscriber_v311(remote.addr, "r-sub2", true, &[state]);
    assert_eq!(
        value(&r_sub, false).as_deref(),
        Some("1"),
        "on the remote, up again"
    );
    ours.kill9();
    assert_eq!(
        value(&r_sub, false).as_deref(),
        Some("0"),
        "the will, on the remote"
    );
}

/// ACL rules name the bridge by its local client id, as a username: with a rule letting
/// `local_clientid` write `in/ok/#` only, what the remote sends on `in/ok` is published here
/// and what it sends on `in/no` is refused (counted as dropped, acknowledged to the remote).
#[test]
fn bridge_acl_rules_name_the_bridge_by_its_local_client_id() {
    let remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("ours.db");
    let limit = Duration::from_secs(30);
    for rule in [
        vec!["acl", "add", "--user", "garage-here", "write", "in/ok/#"],
        vec!["acl", "add", "read", "#"],
    ] {
        let out = common::run_admin(&db, &rule, None, limit);
        assert!(out.status.success(), "{out:?}");
    }
    let block = format!(
        "connection garage\naddress {}\ntopic in/# in 1\nlocal_clientid garage-here\n\
         restart_timeout 1\nnotifications false",
        remote.addr
    );
    let (_dir, conf) = our_config(&block);
    let ours = Broker::start_with_db(
        &db,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--admin-password",
            ADMIN_PW,
        ],
    );
    await_log(&ours, "local session garage-here");
    let o_sub = subscriber_v5(ours.mqtt, "o-sub", &["in/#"]);
    let r_pub = raw_v311(remote.addr, "r-pub", true);
    publish(&r_pub, false, "in/no/1", "refused", 1, 1, false);
    publish(&r_pub, false, "in/ok/1", "allowed", 1, 2, false);
    assert_eq!(
        summary(&collect(&o_sub, true, 1)),
        vec![("in/ok/1".to_owned(), "allowed".to_owned(), 1, false)],
        "--- our log ---\n{}",
        ours.log()
    );
    let garage = &bridges_api(&ours)[0];
    assert_eq!(garage["dropped"], 1, "{garage}");
    assert_eq!(garage["forwarded_in"], 1, "{garage}");
}

/// A bridge over TLS (`bridge_cafile`) to a second instance of ours with a TLS listener and a
/// certificate from `tls init`: the remote's certificate is checked against the CA and the
/// address, and messages cross both ways.
#[test]
fn bridge_over_tls_to_a_second_instance_of_ours() {
    let pki = tempfile::tempdir().unwrap();
    let made = common::run_admin(
        &pki.path().join("unused.db"),
        &["tls", "init", "--dir", pki.path().to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    assert!(made.status.success(), "{made:?}");
    let file = |n: &str| pki.path().join(n).to_str().unwrap().to_owned();
    let remote = Broker::start(&[
        "--allow-anonymous",
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        &file("server.crt"),
        "--keyfile",
        &file("server.key"),
    ]);
    let tls = remote.tls.expect("the remote's TLS listener");
    let block = format!(
        "connection secure\naddress {tls}\nbridge_cafile {}\nbridge_protocol_version mqttv50\n\
         topic up/# out 1\ntopic down/# in 1\nrestart_timeout 1\nnotifications false",
        file("ca.crt")
    );
    let (ours, _conf) = bridged(&block);
    await_log(&ours, &format!("bridge secure: connected to {tls}"));
    let r_sub = subscriber_v5(remote.mqtt, "r-sub", &["up/#"]);
    let o_sub = subscriber_v5(ours.mqtt, "o-sub", &["down/#"]);
    let (o_pub, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    let (r_pub, _) = raw_v5(remote.mqtt, "r-pub", true, &[]);
    publish(&o_pub, true, "up/1", "out over tls", 1, 1, false);
    publish(&r_pub, true, "down/1", "in over tls", 2, 2, false);
    assert_eq!(payloads(&collect(&r_sub, true, 1)), vec!["out over tls"]);
    assert_eq!(payloads(&collect(&o_sub, true, 1)), vec!["in over tls"]);
}

/// A bridge name is any word without `/`, `+`, `#`: a `"` or `\` in it is escaped in `/metrics`'
/// label value as the Prometheus text format requires, so the scrape stays parseable.
#[test]
fn bridge_metrics_label_escapes_double_quote_and_backslash_in_the_name() {
    let remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let block = format!(
        "connection we\"ird\\name\naddress {}\ntopic n/# out 1\nrestart_timeout 1",
        remote.addr
    );
    let (ours, _conf) = bridged_with(&block, &["--admin-password", ADMIN_PW]);
    let up = await_state(&ours, "up");
    assert_eq!(up["name"], "we\"ird\\name", "{up}");
    let metrics = web_get(&ours, "/metrics").text();
    assert!(
        metrics.contains("mqtt5_bridge_up{bridge=\"we\\\"ird\\\\name\"} 1\n"),
        "{metrics}"
    );
}

/// A remote with a small Receive Maximum (2, MQTT-3.3.4-9 / §4.9): the local session hands the
/// bridge up to 100 messages, those beyond the remote's window wait in the bridge; every QoS 1
/// and QoS 2 message still arrives once, in order, and the remote never sees its window exceeded
/// (it would close the link with 0x93).
#[test]
fn bridge_mqtt_4_9_holds_messages_beyond_the_remote_receive_maximum_in_order() {
    let remote = Broker::start(&["--allow-anonymous", "--receive-maximum", "2"]);
    let block = format!(
        "connection small\naddress {}\nbridge_protocol_version mqttv50\ntopic q/# out 2\n\
         restart_timeout 1",
        remote.mqtt
    );
    let (ours, _conf) = bridged_with(&block, &["--admin-password", ADMIN_PW]);
    await_state(&ours, "up");
    let r_sub = subscriber_v5(remote.mqtt, "r-sub", &["q/#"]);
    // Queued in the local session while the bridge is stopped, handed over at once after.
    let answer = web_post(&ours, "/api/bridges/stop", r#"{"name":"small"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    await_state(&ours, "stopped");
    let (p, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);
    for i in 0..60u16 {
        publish(
            &p,
            true,
            "q/m",
            &format!("m{i}"),
            1 + (i % 2) as u8,
            1 + i,
            false,
        );
    }
    let answer = web_post(&ours, "/api/bridges/start", r#"{"name":"small"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let got = collect(&r_sub, true, 60);
    let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    assert_eq!(
        payloads(&got),
        want,
        "--- our log ---\n{}\n--- remote log ---\n{}",
        ours.log(),
        remote.log()
    );
    assert_eq!(
        ours.log().matches("bridge small: connected to").count(),
        2,
        "one link before the stop, one after, none lost in between:\n{}",
        ours.log()
    );
}
