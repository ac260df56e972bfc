//! `mqtt5-broker`: parse the configuration, start the MQTT listener, the ticker and the web
//! page, then wait for Ctrl-C or SIGTERM and stop everything in order.

use std::process::ExitCode;

use mqtt5_broker::broker::server::Server;
use mqtt5_broker::broker::ticker::Ticker;
use mqtt5_broker::broker::Broker;
use mqtt5_broker::{config, web};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqtt5-broker: {e}");
            return ExitCode::from(2);
        }
    };
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

    let broker = Broker::new(config);
    let server = Server::new(broker.clone());
    if let Err(e) = server.start() {
        eprintln!(
            "mqtt5-broker: cannot listen for MQTT on {}: {e}",
            broker.config.listen
        );
        return ExitCode::from(1);
    }
    let mut ticker = match Ticker::start(broker.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mqtt5-broker: cannot start the ticker thread: {e}");
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
            return ExitCode::from(1);
        }
    };

    let _ = signal_rx.recv();
    log::info!("shutting down");
    web.stop();
    server.stop();
    ticker.stop();
    log::info!("stopped");
    ExitCode::SUCCESS
}
