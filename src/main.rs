//! `mqtt5-broker`: parse the configuration; either run an admin command on the database
//! (`user`, `acl`, `ban`, `unban`, `bans`) and exit, or open the store, start the MQTT listener,
//! the ticker and the web page, then wait for Ctrl-C or SIGTERM and stop everything in order.

use std::process::ExitCode;

use mqtt5_broker::broker::server::Server;
use mqtt5_broker::broker::ticker::Ticker;
use mqtt5_broker::broker::Broker;
use mqtt5_broker::config::{self, AclAction, Command, Config, UserAction};
use mqtt5_broker::store::admin::{self, AdminCommand};
use mqtt5_broker::store::{Store, StoreOptions, SyncMode};
use mqtt5_broker::web;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (command, config) = match config::load_command() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
    match admin_command(command) {
        Some(cmd) => run_admin(&config, cmd),
        None => run_broker(config),
    }
}

/// The admin command a subcommand stands for; `None` for `run`.
fn admin_command(command: Command) -> Option<AdminCommand> {
    Some(match command {
        Command::Run => return None,
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
            print!("{text}");
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
    let broker = match Broker::with_store(config, store.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot load the saved state: {e}");
            store.shutdown();
            return ExitCode::from(1);
        }
    };
    let server = Server::new(broker.clone());
    if let Err(e) = server.start() {
        eprintln!(
            "mqtt5-broker: cannot listen for MQTT on {}: {e}",
            broker.config.listen
        );
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
    let mut web = match web::Web::start(server.clone()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "mqtt5-broker: cannot serve the web page on {}: {e}",
                broker.config.web_listen
            );
            server.stop();
            ticker.stop();
            store.shutdown();
            return ExitCode::from(1);
        }
    };

    let _ = signal_rx.recv();
    log::info!("shutting down");
    web.stop();
    server.stop();
    ticker.stop();
    broker.save_on_shutdown();
    store.shutdown();
    log::info!("stopped");
    ExitCode::SUCCESS
}
