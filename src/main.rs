//! `mqtt5-broker`: parse the configuration; either run an admin command on the database
//! (`user`, `acl`, `ban`, `unban`, `bans`, `backup`, `import mosquitto`) or make TLS
//! certificates (`tls init`) and exit, or
//! open the store, start the MQTT listener,
//! the ticker and the web page, then wait for Ctrl-C or SIGTERM and stop everything in order;
//! SIGHUP re-reads the config file and the TLS certificates (`hangup`, [`Reloader`]).

use std::process::ExitCode;

use mqtt5_broker::bridge::Bridges;
use mqtt5_broker::broker::server::Server;
use mqtt5_broker::broker::ticker::Ticker;
use mqtt5_broker::broker::tls::TlsContext;
use mqtt5_broker::broker::writer::WriterThread;
use mqtt5_broker::broker::Broker;
use mqtt5_broker::config::{self, AclAction, Command, Config, TlsAction, UserAction};
use mqtt5_broker::reload::Reloader;
use mqtt5_broker::store::admin::{self, AdminCommand};
use mqtt5_broker::store::backup;
use mqtt5_broker::store::{Store, StoreOptions, SyncMode};
use mqtt5_broker::tls_init;
use mqtt5_broker::web;
use std::sync::Arc;

fn main() -> ExitCode {
    limit_malloc_arenas();
    init_logging();
    let (command, config) = match config::load_command() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Tls { action } => run_tls(&config, action),
        Command::Backup { file } => run_backup(&config, &file),
        Command::Import { from } => run_import(&config, from),
        command => match admin_command(command) {
            Some(cmd) => run_admin(&config, cmd),
            None => run_broker(config),
        },
    }
}

/// The log: `[TIME LEVEL module] message` on stderr, coloured only on a terminal (env_logger's
/// default). Under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device
/// and inode), each line is `<N>LEVEL module: message` instead: the journal stamps the time
/// itself and takes the syslog priority `<N>` from the prefix (sd-daemon(3)), so `journalctl
/// -p warning` works.
fn init_logging() {
    use std::io::Write as _;
    // rustls warns about what peers do (OpenSSL clients send an IP address as SNI, which the
    // RFC forbids: a WARN per mosquitto_pub); the broker logs each failed handshake itself.
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    );
    if stderr_is_the_journal() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(
                buf,
                "<{priority}>{} {}: {}",
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream, and a child whose stderr was redirected inherits the
/// variable but not the stream.
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // stat(2) through /proc follows the descriptor to the pipe or socket itself.
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `backup FILE`: a consistent copy of the database, whether or not a broker runs on it.
fn run_backup(config: &Config, file: &std::path::Path) -> ExitCode {
    match backup::backup(&config.db, file) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt5-broker: backup of {}: {e}", config.db.display());
            ExitCode::from(1)
        }
    }
}

/// `import mosquitto`: the report on stdout; a fatal error stores nothing.
fn run_import(config: &Config, from: config::ImportFrom) -> ExitCode {
    let config::ImportFrom::Mosquitto {
        conf,
        passwd,
        acl,
        dry_run,
        config_out,
    } = from;
    let opts = mqtt5_broker::import::Options {
        conf,
        passwd,
        acl,
        dry_run,
        config_out,
        db: config.db.clone(),
    };
    match mqtt5_broker::import::run(&opts) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt5-broker: import: {e}; nothing was imported");
            ExitCode::from(1)
        }
    }
}

/// `tls init`: the files, then what to do with them; no database is opened.
fn run_tls(config: &Config, action: TlsAction) -> ExitCode {
    let TlsAction::Init {
        dir,
        names,
        ips,
        force,
    } = action;
    let opts = tls_init::InitOptions {
        dir: dir.unwrap_or_else(|| tls_init::default_dir(&config.db)),
        names,
        ips,
        force,
    };
    match tls_init::init(&opts) {
        Ok(made) => {
            println!("{}", tls_init::report(&made));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives threads up to 8 malloc arenas per core; with a thread per client, each arena
/// keeps its own free lists and high-water mark, and a long run under connection churn crept
/// ~0.3 MiB a minute (a 20-minute `scripts/soak`: 18.8 → 24.4 MiB); with 2 arenas the same soak
/// was flat at 18.3 MiB from minute 4. So: one arena per core, 2 to 4, unless the user chose
/// with `MALLOC_ARENA_MAX`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::raw::c_int;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    /// `M_ARENA_MAX` in glibc's `<malloc.h>`.
    const M_ARENA_MAX: c_int = -8;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = c_int::try_from(cores.clamp(2, 4)).unwrap_or(2);
    // SAFETY: mallopt only sets a malloc tunable; it is called before any other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// The admin command a subcommand stands for; `None` for `run` (`tls` and `backup` are
/// dispatched before).
fn admin_command(command: Command) -> Option<AdminCommand> {
    Some(match command {
        Command::Run | Command::Tls { .. } | Command::Backup { .. } | Command::Import { .. } => {
            return None
        }
        Command::User { action } => match action {
            UserAction::Add { name } => AdminCommand::UserAdd { name },
            UserAction::Del { name } => AdminCommand::UserDel { name },
            UserAction::Passwd { name } => AdminCommand::UserPasswd { name },
            UserAction::List => AdminCommand::UserList,
        },
        Command::Acl { action } => match action {
            AclAction::Add {
                user,
                deny,
                access,
                pattern,
            } => AdminCommand::AclAdd {
                username: user,
                pattern,
                access,
                deny,
            },
            AclAction::Del { id } => AdminCommand::AclDel { id },
            AclAction::List => AdminCommand::AclList,
        },
        Command::Ban { kind, value } => AdminCommand::Ban { kind, value },
        Command::Unban { kind, value } => AdminCommand::Unban { kind, value },
        Command::Bans => AdminCommand::BanList,
    })
}

fn run_admin(config: &Config, cmd: AdminCommand) -> ExitCode {
    match admin::run(&config.db, cmd, || admin::read_password("Password: ")) {
        Ok(text) => {
            // The text has no final newline; a terminal prompt must not follow it on its line.
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            ExitCode::from(1)
        }
    }
}

fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        history_per_topic: config.history_per_topic,
        history_max_topics: config.history_max_topics,
        max_bytes: config.db_max_bytes,
        sync: match config.sync {
            config::Sync::Normal => SyncMode::Normal,
            config::Sync::Full => SyncMode::Full,
            config::Sync::Relaxed => SyncMode::Relaxed {
                window_ms: config.sync_window.as_millis() as u64,
            },
        },
        ..StoreOptions::default()
    }
}

fn run_broker(config: Config) -> ExitCode {
    for (name, value) in config.summary() {
        log::debug!("setting {name} = {value}");
    }
    // Before any thread exists, so that every thread inherits the mask (see `hangup`).
    let hangup = match hangup::block() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot block SIGHUP: {e}");
            return ExitCode::from(1);
        }
    };
    // Certificates and keys read and checked before anything starts: a bad file is a bad
    // setting (one line, exit code 2).
    let tls = match TlsContext::from_config(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let web_tls = match web::tls::load(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let bridges = match Bridges::new(&config.bridges) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signal_tx.try_send(());
    }) {
        eprintln!("mqtt5-broker: cannot install the signal handler: {e}");
        return ExitCode::from(1);
    }

    let store = match Store::open(&config.db, store_options(&config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(1);
        }
    };
    let writer = match WriterThread::start() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot start the writer thread: {e}");
            store.shutdown();
            return ExitCode::from(1);
        }
    };
    let broker = match Broker::with_store(config, store.clone(), writer.writer().clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot load the saved state: {e}");
            store.shutdown();
            return ExitCode::from(1);
        }
    };
    let server = Server::with_tls(broker.clone(), tls.clone());
    if let Err(e) = server.start() {
        // The error names the listener that could not bind.
        eprintln!("mqtt5-broker: cannot listen: {e}");
        store.shutdown();
        return ExitCode::from(1);
    }
    let mut ticker = match Ticker::start(broker.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot start the ticker thread: {e}");
            server.stop();
            store.shutdown();
            return ExitCode::from(1);
        }
    };
    let reloader = Arc::new(Reloader::new(broker.clone(), tls.clone(), web_tls.clone()));
    let mut web = match web::Web::start(server.clone(), web_tls.clone(), reloader.clone()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "mqtt5-broker: cannot serve the web page on {}: {e}",
                broker.config().web_listen
            );
            server.stop();
            ticker.stop();
            store.shutdown();
            return ExitCode::from(1);
        }
    };

    let _ = broker.bridges.set(bridges.clone());
    if let Err(e) = bridges.start_all(&broker) {
        eprintln!("mqtt5-broker: {e}");
        bridges.stop_all();
        web.stop();
        server.stop();
        ticker.stop();
        store.shutdown();
        return ExitCode::from(1);
    }

    if let Err(e) = hangup.on_signal(move || {
        reloader.reload("SIGHUP");
    }) {
        log::error!("cannot start the sighup thread: SIGHUP will not reload the config: {e}");
    }

    let _ = signal_rx.recv();
    log::info!("shutting down");
    // First: each bridge says locally that its link is down and leaves its session to queue.
    bridges.stop_all();
    web.stop();
    server.stop();
    ticker.stop();
    drop(writer);
    broker.save_on_shutdown();
    store.shutdown();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGHUP: re-read the config file and the certificates ([`Reloader`]). Not with `ctrlc` (it handles SIGINT and SIGTERM only) nor a
/// new crate: SIGHUP is blocked in every thread (the mask is set before the first thread starts
/// and inherited) and the `sighup` thread takes it with `sigwait(3)`, so the reload runs as
/// ordinary code on an ordinary thread — no async-signal-safety rules, no self-pipe — with only
/// `libc`, already a dependency, for the two calls. A SIGHUP arriving while a reload runs is
/// kept pending by the kernel and taken next (several collapse into one).
mod hangup {
    use std::io;
    use std::mem::MaybeUninit;
    use std::thread;

    /// SIGHUP blocked in the calling thread (and so in every thread it starts from now on).
    pub struct Blocked(libc::sigset_t);

    pub fn block() -> io::Result<Blocked> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset and pthread_sigmask
        // read an initialised set; SIGHUP is a valid signal number.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGHUP);
            let set = set.assume_init();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Blocked(set))
        }
    }

    impl Blocked {
        /// Starts the `sighup` thread: `action` for each SIGHUP, for the life of the process.
        pub fn on_signal(self, action: impl Fn() + Send + 'static) -> io::Result<()> {
            thread::Builder::new()
                .name("sighup".into())
                .spawn(move || loop {
                    let mut sig: libc::c_int = 0;
                    // SAFETY: the set is initialised (see `block`) and `sig` is a valid out pointer.
                    let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
                    if rc != 0 {
                        log::error!("sigwait failed: {}", io::Error::from_raw_os_error(rc));
                        return;
                    }
                    action();
                })?;
            Ok(())
        }
    }
}
