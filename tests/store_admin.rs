//! Users, ACL rules and bans: every admin command-line command against a real file, the same
//! operations through a running store's handle, the in-memory `AclSet` they produce (including
//! `%u` / `%c` and wildcards), and a running store noticing a change made by the command line.

use std::io;
use std::time::{Duration, Instant};

use mqtt5_broker::auth::{verify_password, AclAccess, AclRule, BanKind};
use mqtt5_broker::store::admin::{run, AdminCommand};
use mqtt5_broker::store::{Store, StoreError, StoreOptions};
use rusqlite::Connection;

fn pw(p: &'static str) -> impl FnOnce() -> io::Result<String> {
    move || Ok(p.to_owned())
}

fn no_pw() -> io::Result<String> {
    panic!("this command must not ask for a password")
}

#[test]
fn admin_user_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    assert_eq!(
        run(&db, AdminCommand::UserList, no_pw).unwrap(),
        "(no users)"
    );
    let out = run(
        &db,
        AdminCommand::UserAdd {
            name: "alice".into(),
        },
        pw("s3cret"),
    )
    .unwrap();
    assert_eq!(out, "added user alice");
    let err = run(
        &db,
        AdminCommand::UserAdd {
            name: "alice".into(),
        },
        pw("x"),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::UserExists(_)), "{err}");
    run(&db, AdminCommand::UserAdd { name: "bob".into() }, pw("pw")).unwrap();
    let list = run(&db, AdminCommand::UserList, no_pw).unwrap();
    let names: Vec<_> = list
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(list.contains("created 20"), "{list}");

    let hash = |name: &str| -> String {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT password_hash FROM users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(hash("alice").starts_with("$argon2id$"));
    assert!(verify_password("s3cret", &hash("alice")));
    assert!(!verify_password("wrong", &hash("alice")));

    run(
        &db,
        AdminCommand::UserPasswd {
            name: "alice".into(),
        },
        pw("new"),
    )
    .unwrap();
    assert!(verify_password("new", &hash("alice")));
    assert!(!verify_password("s3cret", &hash("alice")));
    let err = run(
        &db,
        AdminCommand::UserPasswd {
            name: "carol".into(),
        },
        pw("x"),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser(_)), "{err}");

    let err = run(
        &db,
        AdminCommand::UserAdd {
            name: "dave".into(),
        },
        pw(""),
    )
    .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = run(&db, AdminCommand::UserAdd { name: "".into() }, pw("x")).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let err = run(&db, AdminCommand::UserAdd { name: "eve".into() }, || {
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no input"))
    })
    .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");

    assert_eq!(
        run(&db, AdminCommand::UserDel { name: "bob".into() }, no_pw).unwrap(),
        "deleted user bob"
    );
    let err = run(&db, AdminCommand::UserDel { name: "bob".into() }, no_pw).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser(_)), "{err}");
    assert_eq!(
        run(&db, AdminCommand::UserList, no_pw)
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn admin_acl_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("acl.db");
    assert!(run(&db, AdminCommand::AclList, no_pw)
        .unwrap()
        .starts_with("(no ACL rules"));
    let add = |username: Option<&str>, pattern: &str, access, deny| AdminCommand::AclAdd {
        username: username.map(str::to_owned),
        pattern: pattern.into(),
        access,
        deny,
    };
    assert_eq!(
        run(
            &db,
            add(None, "users/%u/#", AclAccess::ReadWrite, false),
            no_pw
        )
        .unwrap(),
        "added ACL rule 1"
    );
    run(
        &db,
        add(Some("bob"), "secret/#", AclAccess::Read, true),
        no_pw,
    )
    .unwrap();
    let err = run(&db, add(None, "a/#/b", AclAccess::Read, false), no_pw).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let list = run(&db, AdminCommand::AclList, no_pw).unwrap();
    assert_eq!(
        list,
        "ID\tUSER\tACCESS\tRULE\tPATTERN\n1\t*\treadwrite\tallow\tusers/%u/#\n2\tbob\tread\tdeny\tsecret/#"
    );
    run(&db, AdminCommand::AclDel { id: 1 }, no_pw).unwrap();
    let err = run(&db, AdminCommand::AclDel { id: 1 }, no_pw).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRule(1)), "{err}");
    // Ids are never reused.
    assert_eq!(
        run(&db, add(None, "x", AclAccess::Write, false), no_pw).unwrap(),
        "added ACL rule 3"
    );
}

#[test]
fn admin_ban_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bans.db");
    assert_eq!(run(&db, AdminCommand::BanList, no_pw).unwrap(), "(no bans)");
    let ban = |kind, value: &str| AdminCommand::Ban {
        kind,
        value: value.into(),
    };
    assert_eq!(
        run(&db, ban(BanKind::ClientId, "evil"), no_pw).unwrap(),
        "banned client_id evil"
    );
    run(&db, ban(BanKind::ClientId, "evil"), no_pw).unwrap();
    run(&db, ban(BanKind::Username, "mallory"), no_pw).unwrap();
    let list = run(&db, AdminCommand::BanList, no_pw).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.starts_with("client_id\tevil\tsince "), "{list}");
    let unban = |kind, value: &str| AdminCommand::Unban {
        kind,
        value: value.into(),
    };
    run(&db, unban(BanKind::ClientId, "evil"), no_pw).unwrap();
    let err = run(&db, unban(BanKind::ClientId, "evil"), no_pw).unwrap_err();
    assert!(matches!(err, StoreError::NotBanned { .. }), "{err}");
    assert_eq!(
        run(&db, AdminCommand::BanList, no_pw)
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn admin_refuses_newer_corrupt_and_locked_files() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    run(&newer, AdminCommand::UserList, no_pw).unwrap();
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 1000)
        .unwrap();
    let err = run(&newer, AdminCommand::UserList, no_pw).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 1000, .. }),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0xA5; 4096]).unwrap();
    let err = run(&corrupt, AdminCommand::BanList, no_pw).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    let locked = dir.path().join("locked.db");
    run(&locked, AdminCommand::UserList, no_pw).unwrap();
    let other = Connection::open(&locked).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = run(
        &locked,
        AdminCommand::Ban {
            kind: BanKind::Username,
            value: "x".into(),
        },
        no_pw,
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    other.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_running_store_sees_command_line_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let store = Store::open(&db, StoreOptions::default()).unwrap();
    assert!(!store.acl().is_banned("evil", None));
    let generation = store.acl_generation();
    run(
        &db,
        AdminCommand::Ban {
            kind: BanKind::ClientId,
            value: "evil".into(),
        },
        no_pw,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while !store.acl().is_banned("evil", None) {
        assert!(Instant::now() < end, "the change was not picked up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.acl_generation() > generation);
    store.shutdown();
}

#[test]
fn users_acl_and_bans_through_the_handle_update_the_acl_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("handle.db"), StoreOptions::default()).unwrap();

    store.user_add("alice", "pw1").unwrap();
    assert!(matches!(
        store.user_add("alice", "pw2"),
        Err(StoreError::UserExists(_))
    ));
    assert!(store
        .acl()
        .password_hash("alice")
        .is_some_and(|h| mqtt5_broker::auth::verify_password("pw1", h)));
    assert!(!store
        .acl()
        .password_hash("alice")
        .is_some_and(|h| mqtt5_broker::auth::verify_password("pw2", h)));
    assert!(!store
        .acl()
        .password_hash("nobody")
        .is_some_and(|h| mqtt5_broker::auth::verify_password("pw1", h)));
    store.user_passwd("alice", "pw2").unwrap();
    assert!(store
        .acl()
        .password_hash("alice")
        .is_some_and(|h| mqtt5_broker::auth::verify_password("pw2", h)));
    let hash = store.user_hash("alice").unwrap().unwrap();
    assert!(verify_password("pw2", &hash));
    assert_eq!(store.user_hash("nobody").unwrap(), None);
    assert_eq!(store.user_list().unwrap().len(), 1);

    // No rule: everything allowed.
    assert!(store.acl().can_publish(Some("alice"), "c1", "any/topic"));
    let own = store
        .acl_add(AclRule::allow(None, "users/%u/#", AclAccess::ReadWrite))
        .unwrap();
    store
        .acl_add(AclRule::allow(None, "devices/%c/+", AclAccess::Write))
        .unwrap();
    store
        .acl_add(AclRule::allow(
            Some("alice"),
            "shared/+/status",
            AclAccess::Read,
        ))
        .unwrap();
    store
        .acl_add(AclRule::deny(
            Some("alice"),
            "users/alice/private",
            AclAccess::ReadWrite,
        ))
        .unwrap();
    assert!(matches!(
        store.acl_add(AclRule::allow(None, "a/b#", AclAccess::Read)),
        Err(StoreError::Invalid(_))
    ));
    let acl = store.acl();
    assert!(acl.can_publish(Some("alice"), "c1", "users/alice/x"));
    assert!(!acl.can_publish(Some("alice"), "c1", "users/bob/x"));
    assert!(!acl.can_publish(Some("alice"), "c1", "users/alice/private"));
    assert!(!acl.can_publish(None, "c1", "users/alice/x"));
    assert!(acl.can_publish(None, "c1", "devices/c1/temp"));
    assert!(!acl.can_publish(None, "c2", "devices/c1/temp"));
    assert!(
        !acl.can_subscribe(None, "c1", "devices/c1/temp"),
        "write only"
    );
    assert!(acl.can_subscribe(Some("alice"), "c1", "shared/+/status"));
    assert!(acl.can_subscribe(Some("alice"), "c1", "users/alice/#"));
    assert!(!acl.can_subscribe(Some("alice"), "c1", "shared/#"));
    assert!(!acl.can_subscribe(Some("bob"), "c1", "shared/x/status"));
    assert!(!acl.can_read(Some("alice"), "c1", "users/alice/private"));
    assert_eq!(store.acl_list().unwrap().len(), 4);
    store.acl_del(own).unwrap();
    assert!(matches!(store.acl_del(own), Err(StoreError::NoSuchRule(_))));
    assert!(!store
        .acl()
        .can_publish(Some("alice"), "c1", "users/alice/x"));

    store.ban(BanKind::Username, "mallory").unwrap();
    store.ban(BanKind::ClientId, "bad-client").unwrap();
    assert!(store.acl().is_banned("x", Some("mallory")));
    assert!(store.acl().is_banned("bad-client", None));
    assert_eq!(store.bans().unwrap().len(), 2);
    store.unban(BanKind::Username, "mallory").unwrap();
    assert!(!store.acl().is_banned("x", Some("mallory")));
    assert!(matches!(
        store.unban(BanKind::Username, "mallory"),
        Err(StoreError::NotBanned { .. })
    ));

    store.user_del("alice").unwrap();
    assert!(!store.acl().has_user("alice"));
    store.shutdown();
}

#[test]
fn admin_changes_through_the_handle_report_an_unwritable_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("busy.db");
    let store = Store::open(
        &db,
        StoreOptions {
            busy_timeout: Duration::from_millis(100),
            retry_interval: Duration::from_millis(50),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let other = Connection::open(&db).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store.ban(BanKind::ClientId, "x").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(!store.acl().is_banned("x", None));
    other.execute_batch("ROLLBACK").unwrap();
    store.ban(BanKind::ClientId, "x").unwrap();
    assert!(store.acl().is_banned("x", None));
    store.shutdown();
}
