//! The running store: group commit, shedding of history under overload, durability tickets,
//! sync modes, history pruning and round trips of retained messages and sessions across a close
//! and reopen. Real SQLite files in temporary directories; the store runs its own `store` thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt5_broker::message::Message;
use mqtt5_broker::protocol::{
    Properties, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, Will,
};
use mqtt5_broker::store::{
    MessageState, SessionRecord, Store, StoreError, StoreOptions, SubscriptionRow, SyncMode,
};
use rusqlite::{params, Connection, OptionalExtension};

fn opts() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_millis(200),
        retry_interval: Duration::from_millis(50),
        ..StoreOptions::default()
    }
}

fn msg(topic: &str, payload: &[u8], qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos,
        retain: false,
        properties: Properties::default(),
        publisher: Some(Arc::from("pub-1")),
        received: Instant::now(),
    })
}

fn session(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.into(),
        expiry_interval: 3600,
        protocol_version: ProtocolVersion::V5,
        subscriptions: vec![SubscriptionRow {
            filter: "a/+".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            subscription_id: Some(7),
        }],
        will: Some(Will {
            topic: "will/t".into(),
            payload: b"bye".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                will_delay_interval: Some(30),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            },
        }),
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn batching_commits_1000_commands_in_far_fewer_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("b.db"), opts()).unwrap();
    let before = store.stats();
    let m = msg("t", b"x", QoS::AtLeastOnce);
    let tickets: Vec<_> = (0..1000)
        .map(|i| store.set_retained(&format!("r/{i}"), Some(&m)))
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
    let stats = store.stats();
    let commands = stats.commands - before.commands;
    let transactions = stats.transactions - before.transactions;
    println!("1000 commands in {transactions} transactions");
    assert_eq!(commands, 1000);
    assert!(transactions <= 100, "{transactions} transactions");
    assert_eq!(store.load().unwrap().retained.len(), 1000);
    store.shutdown();
}

#[test]
fn history_is_shed_under_overload_and_durable_writes_survive_a_stalled_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shed.db");
    let store = Store::open(
        &path,
        StoreOptions {
            history_capacity: 8,
            ..opts()
        },
    )
    .unwrap();
    // Another process holds the write lock: the store thread stalls in busy waits and fails.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let m = msg("flood", b"payload", QoS::AtMostOnce);
    for i in 0..50 {
        let _ = store.set_retained(&format!("keep/{i}"), Some(&m));
    }
    let started = Instant::now();
    for _ in 0..20_000 {
        store.record_message(&m);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the history path never blocks"
    );
    wait_until("a failed commit", || store.stats().failed_commits > 0);
    let stats = store.stats();
    assert!(stats.shed > 0, "{stats:?}");
    assert!(stats.last_error.is_some(), "{stats:?}");
    assert_eq!(stats.pending, 50, "{stats:?}");
    // A durable write sent while failing is kept too, but its ticket says at once that it is
    // not committed: nobody may acknowledge on it.
    let late = store.set_retained("keep/late", Some(&m));
    assert!(
        matches!(late.wait(), Err(StoreError::Unavailable { .. })),
        "a ticket while the database fails must not fire as committed"
    );
    other.execute_batch("COMMIT").unwrap();
    wait_until("the backlog committed", || store.stats().pending == 0);
    store.flush().wait().unwrap();
    let stats = store.stats();
    assert_eq!(stats.last_error, None);
    assert_eq!(stats.pending, 0);
    assert_eq!(store.load().unwrap().retained.len(), 51);
    store.shutdown();
}

#[test]
fn persist_message_ticket_fires_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticket.db");
    let store = Store::open(&path, opts()).unwrap();
    store.save_session(session("c1"));
    store.flush().wait().unwrap();

    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ticket = store.persist_message(
        "c1",
        1,
        &msg("a/b", b"q1", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    // While the file is locked the ticket never fires as committed: it either waits or says
    // at once that the database cannot commit (after the first failed attempt).
    match ticket.wait_timeout(Duration::from_millis(400)) {
        Ok(false) | Err(StoreError::Unavailable { .. }) => {}
        other => panic!("no commit while the file is locked, got {other:?}"),
    }
    other.execute_batch("COMMIT").unwrap();
    match ticket.wait_timeout(Duration::from_secs(10)) {
        Ok(true) | Err(StoreError::Unavailable { .. }) => {}
        other => panic!("ticket after the lock went: {other:?}"),
    }
    // The write itself was kept and commits once the lock is gone.
    wait_until("the kept write committed", || store.stats().pending == 0);
    store.flush().wait().unwrap();

    // Once the ticket fires, another connection sees the row.
    let reader = Connection::open(&path).unwrap();
    let row: Option<(Vec<u8>, String)> = reader
        .query_row(
            "SELECT payload, state FROM session_messages WHERE client_id = ?1 AND seq = ?2",
            params!["c1", 1],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .unwrap();
    assert_eq!(row, Some((b"q1".to_vec(), "queued".to_owned())));
    store.shutdown();
}

#[test]
fn relaxed_mode_acks_at_once_and_commits_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relaxed.db");
    let store = Store::open(
        &path,
        StoreOptions {
            sync: SyncMode::Relaxed { window_ms: 300 },
            ..opts()
        },
    )
    .unwrap();
    let mut t = store.set_retained("r", Some(&msg("r", b"1", QoS::AtMostOnce)));
    assert!(t.is_committed(), "relaxed tickets fire at once");
    let reader = Connection::open(&path).unwrap();
    let count = || -> i64 {
        reader
            .query_row("SELECT count(*) FROM retained", [], |r| r.get(0))
            .unwrap()
    };
    let sent = Instant::now();
    wait_until("the relaxed commit", || count() == 1);
    assert!(sent.elapsed() < Duration::from_secs(2));
    store.shutdown();
}

#[test]
fn full_sync_mode_commits_before_the_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let store = Store::open(
        &path,
        StoreOptions {
            sync: SyncMode::Full,
            ..opts()
        },
    )
    .unwrap();
    store
        .set_retained("r", Some(&msg("r", b"1", QoS::AtMostOnce)))
        .wait()
        .unwrap();
    let n: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM retained", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    store.shutdown();
}

#[test]
fn retained_sessions_subscriptions_and_messages_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round.db");
    let store = Store::open(&path, opts()).unwrap();
    let retained = Arc::new(Message {
        topic: "home/temp".into(),
        payload: vec![0, 1, 2, 255],
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(3600),
            content_type: Some("application/octet-stream".into()),
            response_topic: Some("resp".into()),
            correlation_data: Some(vec![9, 8, 7]),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Properties::default()
        },
        publisher: Some(Arc::from("sensor")),
        received: Instant::now(),
    });
    let _ = store.set_retained("home/temp", Some(&retained));
    let _ = store.set_retained("gone", Some(&retained));
    let _ = store.set_retained("gone", None);

    store.save_session(session("c1"));
    store.save_subscription(
        "c1",
        SubscriptionRow {
            filter: "$share/g/b/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            subscription_id: None,
        },
    );
    store.save_subscription(
        "c1",
        SubscriptionRow {
            filter: "tmp".into(),
            options: SubscriptionOptions::default(),
            subscription_id: None,
        },
    );
    store.remove_subscription("c1", "tmp");
    for seq in 1..=4 {
        let _ = store.persist_message(
            "c1",
            seq,
            &msg("a/x", format!("m{seq}").as_bytes(), QoS::ExactlyOnce),
            QoS::AtLeastOnce,
            false,
        );
    }
    store.message_state("c1", 1, Some(10), MessageState::Inflight);
    store.message_state("c1", 2, Some(11), MessageState::Released);
    store.remove_message("c1", 3);
    store.session_disconnected("c1", mqtt5_broker::store::now_ms());

    store.save_session(SessionRecord {
        will: None,
        subscriptions: Vec::new(),
        ..session("c2")
    });
    let _ = store.persist_message(
        "c2",
        1,
        &msg("z", b"z", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    store.delete_session("c2");
    store.shutdown();

    let store = Store::open(&path, opts()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.retained.len(), 1);
    let r = &snap.retained[0];
    assert_eq!(r.topic, "home/temp");
    assert_eq!(r.payload, vec![0, 1, 2, 255]);
    assert_eq!(r.qos, QoS::AtLeastOnce);
    assert_eq!(r.publisher.as_deref(), Some("sensor"));
    assert_eq!(
        r.properties.user_properties,
        retained.properties.user_properties
    );
    assert_eq!(r.properties.correlation_data, Some(vec![9, 8, 7]));
    assert!(r.expiry_at.is_some());
    let m = r
        .clone()
        .into_message(Instant::now(), mqtt5_broker::store::now_ms())
        .unwrap();
    let left = m.properties.message_expiry_interval.unwrap();
    assert!((3590..=3600).contains(&left), "{left}");

    assert_eq!(snap.sessions.len(), 1, "c2 was deleted with its messages");
    let s = &snap.sessions[0];
    let mut want = session("c1");
    want.subscriptions.insert(
        0,
        SubscriptionRow {
            filter: "$share/g/b/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            subscription_id: None,
        },
    );
    assert_eq!(s.record, want);
    assert!(s.disconnected_at.is_some());
    let kept: Vec<_> = s
        .messages
        .iter()
        .map(|m| {
            (
                m.seq,
                m.message.payload.clone(),
                m.packet_id,
                m.state,
                m.message.qos,
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            (
                1,
                b"m1".to_vec(),
                Some(10),
                MessageState::Inflight,
                QoS::AtLeastOnce
            ),
            (
                2,
                b"m2".to_vec(),
                Some(11),
                MessageState::Released,
                QoS::AtLeastOnce
            ),
            (
                4,
                b"m4".to_vec(),
                None,
                MessageState::Queued,
                QoS::AtLeastOnce
            ),
        ]
    );
    assert_eq!(s.next_seq(), 5);
    let q = store.qos_messages(10).unwrap();
    assert_eq!(q.len(), 3);
    store.shutdown();
}

#[test]
fn history_keeps_the_last_n_messages_per_topic_and_counts_topics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("hist.db"),
        StoreOptions {
            history_per_topic: 5,
            history_payload_limit: 4,
            ..opts()
        },
    )
    .unwrap();
    for i in 0..12 {
        store.record_message(&msg("a", format!("msg-{i:02}").as_bytes(), QoS::AtMostOnce));
        store.record_message(&msg("b", b"x", QoS::AtLeastOnce));
    }
    store.flush().wait().unwrap();
    let rows = store.messages("a", 100).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].payload, b"msg-", "cut to the payload limit");
    assert_eq!(rows[0].payload_len, 6);
    assert_eq!(rows[0].publisher.as_deref(), Some("pub-1"));
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let topics = store.topics(0, 10).unwrap();
    assert_eq!(topics.len(), 2);
    assert!(topics.iter().all(|t| t.message_count == 12));
    assert_eq!(store.messages("b", 2).unwrap().len(), 2);

    // The newest are kept, in order, whether they came in one batch or across several.
    for (i, letter) in ('a'..='l').enumerate() {
        store.record_message(&msg("c", letter.to_string().as_bytes(), QoS::AtMostOnce));
        if i == 3 {
            store.flush().wait().unwrap();
        }
    }
    store.flush().wait().unwrap();
    for letter in ['m', 'n'] {
        store.record_message(&msg("c", letter.to_string().as_bytes(), QoS::AtMostOnce));
        store.flush().wait().unwrap();
    }
    let kept: Vec<Vec<u8>> = store
        .messages("c", 100)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(kept, [b"n", b"m", b"l", b"k", b"j"].map(|p| p.to_vec()));
    let c = store.topics(0, 10).unwrap();
    let c = c.iter().find(|t| t.topic == "c").expect("topic c listed");
    assert_eq!(c.message_count, 14, "every message counted, kept or not");

    // A reader thread's batch (two topics interleaved) counts and keeps the same way.
    let batch: Vec<_> = (0..9)
        .map(|i| {
            let topic = if i % 3 == 0 { "e" } else { "d" };
            msg(topic, format!("{i}").as_bytes(), QoS::AtMostOnce)
        })
        .collect();
    store.record_messages(batch);
    store.record_messages(Vec::new());
    store.flush().wait().unwrap();
    let payloads = |topic: &str| -> Vec<Vec<u8>> {
        let rows = store.messages(topic, 100).unwrap();
        rows.into_iter().map(|r| r.payload).collect()
    };
    assert_eq!(
        payloads("d"),
        [b"8", b"7", b"5", b"4", b"2"].map(|p| p.to_vec())
    );
    assert_eq!(payloads("e"), [b"6", b"3", b"0"].map(|p| p.to_vec()));
    let topics = store.topics(0, 10).unwrap();
    let count = |name: &str| {
        topics
            .iter()
            .find(|t| t.topic == name)
            .map(|t| t.message_count)
    };
    assert_eq!((count("d"), count("e")), (Some(6), Some(3)));
    store.shutdown();
}

#[test]
fn clients_are_recorded_with_connect_and_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("clients.db"), opts()).unwrap();
    store.client_connected(mqtt5_broker::store::ClientRecord {
        client_id: "c1".into(),
        username: None,
        protocol_version: ProtocolVersion::V311,
        address: "10.0.0.1:1".into(),
        time: 100,
    });
    store.client_disconnected("c1", "normal disconnect", 200);
    store.flush().wait().unwrap();
    let rows = store.clients(0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].protocol_version, ProtocolVersion::V311);
    assert!(!rows[0].connected);
    assert_eq!(rows[0].first_seen, 100);
    assert_eq!(rows[0].last_disconnect, Some(200));
    assert_eq!(
        rows[0].last_disconnect_reason.as_deref(),
        Some("normal disconnect")
    );
    store.shutdown();
}

#[test]
fn calls_after_shutdown_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("closed.db"), opts()).unwrap();
    let clone = store.clone();
    store.shutdown();
    assert!(clone.load().is_err());
    assert!(clone
        .persist_message(
            "c",
            1,
            &msg("t", b"", QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false
        )
        .wait()
        .is_err());
    clone.record_message(&msg("t", b"", QoS::AtMostOnce));
    clone.shutdown();
}

#[test]
fn a_refused_write_fails_its_own_ticket_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("refused.db"), opts()).unwrap();
    let m = msg("t", b"x", QoS::AtLeastOnce);
    let orphan = store.persist_message("never-saved", 1, &m, QoS::AtLeastOnce, false);
    let fine = store.set_retained("t", Some(&m));
    let err = orphan.wait().unwrap_err();
    assert!(
        matches!(err, mqtt5_broker::store::StoreError::Refused(_)),
        "{err}"
    );
    assert!(err.to_string().contains("never-saved"), "{err}");
    fine.wait().unwrap();
    assert_eq!(store.load().unwrap().retained.len(), 1);
    store.shutdown();
}

#[test]
fn the_handle_is_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<mqtt5_broker::store::StoreHandle>();
    fn send<T: Send>() {}
    send::<mqtt5_broker::store::DurableTicket>();
}

/// The writer half of `committed_writes_survive_kill_9`: runs only in the child process.
#[test]
#[ignore = "child process of committed_writes_survive_kill_9"]
fn kill_9_child_writer() {
    let Some(path) = std::env::var_os("MQTT5_STORE_KILL_TEST_DB") else {
        return;
    };
    let store = Store::open(&path, opts()).unwrap();
    store.save_session(session("c1"));
    let tickets: Vec<_> = (1..=100)
        .map(|seq| {
            store.persist_message(
                "c1",
                seq,
                &msg("a/b", &seq.to_be_bytes(), QoS::AtLeastOnce),
                QoS::AtLeastOnce,
                false,
            )
        })
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
    println!("READY");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn committed_writes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_9_child_writer", "--ignored", "--nocapture"])
        .env("MQTT5_STORE_KILL_TEST_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    child.kill().unwrap(); // SIGKILL: no shutdown, no final commit
    child.wait().unwrap();
    assert!(ready, "the child did not get its tickets");
    let store = Store::open(&path, opts()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.sessions[0].messages.len(), 100);
    store.shutdown();
}

/// An online persistent session (a bridge's, say) often acknowledges a message before the
/// commit that would keep it: the insert, its state change and its removal then ride one
/// transaction, so the store writes none of them. What must hold is the end state: the row is
/// gone — also when an earlier commit had kept a row under the same key — and a message not
/// acknowledged in its batch is kept as before.
#[test]
fn messages_stored_and_removed_in_one_commit_are_never_written_and_end_up_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settled.db");
    let store = Store::open(&path, opts()).unwrap();
    store.save_session(session("c1"));
    // Kept by an earlier commit under seq 5, then stored again and removed in one batch.
    let _ = store.persist_message(
        "c1",
        5,
        &msg("a/old", b"old", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    store.flush().wait().unwrap();
    let rows = |conn: &Connection| -> Vec<i64> {
        let mut st = conn
            .prepare("SELECT seq FROM session_messages WHERE client_id = 'c1' ORDER BY seq")
            .unwrap();
        let seqs = st.query_map([], |r| r.get(0)).unwrap();
        seqs.map(|s| s.unwrap()).collect()
    };
    let other = Connection::open(&path).unwrap();
    assert_eq!(rows(&other), [5]);

    // Hold the file so that everything below lands in one batch.
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut tickets = Vec::new();
    for seq in [1, 2, 5] {
        let m = msg("a/b", format!("m{seq}").as_bytes(), QoS::AtLeastOnce);
        tickets.push(store.persist_message("c1", seq, &m, QoS::AtLeastOnce, false));
        store.message_state("c1", seq, Some(seq as u16), MessageState::Inflight);
    }
    store.remove_message("c1", 1);
    store.remove_message("c1", 5);
    // All eight taken by the store thread into the one transaction it keeps retrying.
    wait_until("the batch held", || store.stats().held == 8);
    other.execute_batch("COMMIT").unwrap();
    for mut t in tickets {
        match t.wait_timeout(Duration::from_secs(10)) {
            Ok(true) | Err(StoreError::Unavailable { .. }) => {}
            other => panic!("a stored message's ticket after the commit: {other:?}"),
        }
    }
    wait_until("the batch committed", || store.stats().pending == 0);
    store.flush().wait().unwrap();
    assert_eq!(
        store.stats().settled,
        2,
        "seq 1 and 5 settled within the batch"
    );
    // Only seq 2, not acknowledged, is kept, in its last state; 5's old row is gone too.
    assert_eq!(rows(&other), [2]);
    let state: String = other
        .query_row(
            "SELECT state FROM session_messages WHERE client_id = 'c1' AND seq = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "inflight");
    store.shutdown();
}

fn retained(topic: &str, payload: &[u8]) -> Arc<Message> {
    Arc::new(Message {
        retain: true,
        ..(*msg(topic, payload, QoS::AtLeastOnce)).clone()
    })
}

/// Group commit across a reader's read (issue 17): while a publisher holds
/// (`StoreHandle::hold_writes`), a commit that a durable write made due waits for the writes it
/// still sends, so that they ride one transaction and the publisher waits for one commit; the
/// hold ends and everything held commits together.
#[test]
fn writes_sent_while_a_publisher_holds_ride_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("hold.db"),
        StoreOptions {
            // Long enough that only the hold's end can let this commit go.
            hold_wait: Duration::from_secs(30),
            ..opts()
        },
    )
    .unwrap();
    store.flush().wait().unwrap();
    let before = store.stats().transactions;
    let hold = store.hold_writes();
    let mut first = store.set_retained("ha/s1/config", Some(&retained("ha/s1/config", b"1")));
    wait_until("the first write taken", || store.stats().held == 1);
    assert!(
        matches!(first.wait_timeout(Duration::from_millis(200)), Ok(false)),
        "the first write committed while its publisher still held"
    );
    let second = store.set_retained("ha/s2/config", Some(&retained("ha/s2/config", b"2")));
    wait_until("the second write taken", || store.stats().held == 2);
    drop(hold);
    first.wait_timeout(Duration::from_secs(10)).unwrap();
    second.wait().unwrap();
    assert_eq!(
        store.stats().transactions - before,
        1,
        "both writes of the hold in one transaction"
    );
    store.shutdown();
}

/// A hold that never ends delays a commit by at most `hold_wait`: a publisher stuck while it
/// holds (or a bug that leaks the hold) costs the others' acknowledgements a bounded delay, never
/// their commit.
#[test]
fn a_hold_that_never_ends_delays_a_commit_by_at_most_hold_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("stuck.db"),
        StoreOptions {
            hold_wait: Duration::from_millis(50),
            ..opts()
        },
    )
    .unwrap();
    let _stuck = store.hold_writes();
    for i in 0..3 {
        let topic = format!("ha/s{i}/config");
        let mut t = store.set_retained(&topic, Some(&retained(&topic, b"x")));
        assert!(
            matches!(t.wait_timeout(Duration::from_secs(10)), Ok(true)),
            "write {i} not committed while a hold never ended"
        );
    }
    store.shutdown();
}

/// A durable write commits at once, but the history waiting beside it does not ride that commit
/// (issue 17): it waits for its own window (`flush_interval`), so that a burst of acknowledged
/// messages writes its history in one transaction per window rather than in each small commit.
/// A flush still writes it at once.
#[test]
fn history_waits_for_its_window_not_for_the_next_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("window.db");
    let store = Store::open(
        &path,
        StoreOptions {
            flush_interval: Duration::from_secs(30),
            ..opts()
        },
    )
    .unwrap();
    store.flush().wait().unwrap();
    store.record_messages(vec![msg("hist/t", b"h1", QoS::AtLeastOnce)]);
    store
        .set_retained("ret/t", Some(&retained("ret/t", b"r1")))
        .wait()
        .unwrap();
    let other = Connection::open(&path).unwrap();
    let count = |table: &str| -> i64 {
        other
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("retained"), 1, "the retained message committed");
    assert_eq!(count("messages"), 0, "history rode the durable commit");
    store.flush().wait().unwrap();
    assert_eq!(count("messages"), 1, "history written by the flush");
    store.shutdown();
}

/// The WAL is copied into the database file by the `store-checkpoint` thread while the store
/// runs, not only by a commit that crosses SQLite's 1,000-page threshold (which stalled every
/// acknowledgement waiting behind that commit). 64 small commits write about 300 pages: without
/// the thread none of them reaches the file before a shutdown.
#[test]
fn small_commits_reach_the_database_file_itself_while_the_store_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.db");
    let store = Store::open(&path, opts()).unwrap();
    for i in 0..64 {
        let topic = format!("ckpt/{i}");
        store
            .set_retained(&topic, Some(&retained(&topic, b"r")))
            .wait()
            .unwrap();
    }
    // What the file alone holds: a copy of it without its WAL.
    let copy = dir.path().join("copy.db");
    let in_file = || -> i64 {
        for f in ["copy.db", "copy.db-wal", "copy.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        std::fs::copy(&path, &copy).unwrap();
        // A copy taken mid-checkpoint may not open: it counts as nothing yet.
        Connection::open(&copy)
            .and_then(|c| c.query_row("SELECT count(*) FROM retained", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    wait_until(
        "the checkpoint thread to copy the WAL into the file",
        || in_file() >= 32,
    );
    store.shutdown();
    assert_eq!(
        in_file(),
        64,
        "everything is in the file after the shutdown"
    );
}

/// A window of history for many topics is written in slices while durable writes keep
/// arriving, each slice its own transaction with the durable writes committed in between (a
/// discovery burst's thousand new topics took 5–11 ms in one piece, and every acknowledgement
/// waited behind it): every message still lands, each topic counted once, and what a flush
/// asks for is written whole.
#[test]
fn history_written_in_slices_between_durable_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slices.db");
    let store = Store::open(
        &path,
        StoreOptions {
            flush_interval: Duration::from_millis(5),
            ..opts()
        },
    )
    .unwrap();
    store.flush().wait().unwrap();
    let other = Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { other.query_row(sql, [], |r| r.get(0)).unwrap() };
    let topics = |from: usize| -> Vec<Arc<Message>> {
        (from..from + 2000)
            .map(|i| msg(&format!("slice/{i:05}"), b"h", QoS::AtMostOnce))
            .collect()
    };
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                let topic = format!("ret/{i}");
                store
                    .set_retained(&topic, Some(&retained(&topic, b"r")))
                    .wait()
                    .unwrap();
            }
        })
    };
    for from in [0, 2000, 4000] {
        store.record_messages(topics(from));
        // The same topics again: a second message each, after the first.
        store.record_messages(
            (from..from + 2000)
                .map(|i| msg(&format!("slice/{i:05}"), b"i", QoS::AtMostOnce))
                .collect(),
        );
    }
    writer.join().unwrap();
    store.flush().wait().unwrap();
    assert_eq!(count("SELECT count(*) FROM messages"), 12_000);
    assert_eq!(count("SELECT count(*) FROM retained"), 400);
    assert_eq!(count("SELECT sum(message_count) FROM topics"), 12_000);
    assert_eq!(count("SELECT count(*) FROM topics"), 6_000);
    assert_eq!(
        count(
            "SELECT count(*) FROM messages h JOIN messages i ON h.topic = i.topic
             WHERE CAST(h.payload AS TEXT) = 'h' AND CAST(i.payload AS TEXT) = 'i' AND h.id < i.id"
        ),
        6_000,
        "each topic's first message before its second"
    );
    store.shutdown();
}
