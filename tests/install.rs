//! `scripts/install` (issue 16, "as a service") staged into a temporary root (`--root`): the
//! binary, the data directory, the config file and the systemd unit, the unit checked by
//! `systemd-analyze verify` (scripts/test installs it), the config file read by the installed
//! binary; an update keeps an edited config; `--uninstall` removes what it added and never the
//! data. A real install (a system user, /usr/local, systemctl) needs root on a machine run by
//! systemd and is not done by the tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn install(root: &Path, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install");
    Command::new(script)
        .arg("--root")
        .arg(root)
        .args(["--bin", env!("CARGO_BIN_EXE_mqtt5-broker")])
        .args(extra)
        .output()
        .expect("run scripts/install")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn staged_install_writes_a_verified_hardened_unit_and_uninstall_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = install(&root, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("systemd-analyze verify: ok"), "{said}");

    let at = |p: &str| -> PathBuf { root.join(p.trim_start_matches('/')) };
    let bin = at("/usr/local/bin/mqtt5-broker");
    let data = at("/var/lib/mqtt5-broker");
    let conf = at("/etc/mqtt5-broker/mqtt5-broker.conf");
    let unit = at("/etc/systemd/system/mqtt5-broker.service");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(mode(&data), 0o750);
    assert_eq!(mode(&conf), 0o640);
    assert_eq!(mode(&unit), 0o644);

    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "User=mqtt5",
        "ExecStart=/usr/local/bin/mqtt5-broker --config /etc/mqtt5-broker/mqtt5-broker.conf",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/mqtt5-broker",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "{line} not in the unit:\n{unit_text}"
        );
    }

    // The config file it wrote is one the installed binary reads (its paths moved into the
    // temporary tree by flags, which win over the file).
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        conf_text.contains("db /var/lib/mqtt5-broker/broker.db"),
        "{conf_text}"
    );
    let db = data.join("broker.db");
    let out = common::run_admin(
        &db,
        &["--config", conf.to_str().unwrap(), "user", "add", "alice"],
        Some("s3cret\n"),
        std::time::Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(db.is_file());

    // An update replaces the binary and the unit, never an edited config.
    std::fs::write(&conf, format!("{conf_text}max_clients 50\n")).unwrap();
    let out = install(&root, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kept "), "{}", text(&out));
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("max_clients 50"));

    // Uninstall: the binary and the unit go; the data and the edited config stay.
    let out = install(&root, &["--uninstall"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!bin.exists() && !unit.exists(), "{said}");
    assert!(db.is_file(), "the database was removed: {said}");
    assert!(conf.is_file() && said.contains("edited"), "{said}");
}

#[test]
fn install_refuses_relative_paths_and_unknown_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["--data", "var/lib/x"],
        vec!["--prefix", "usr"],
        vec!["--user", "bad user"],
        vec!["--frobnicate"],
    ] {
        let out = install(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("scripts/install: "), "{}", text(&out));
    }
    assert!(!tmp.path().join("etc").exists(), "refused, yet wrote files");
}
