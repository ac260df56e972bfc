//! The PEM files the TLS settings name — certificate chains, private keys, CA bundles — read
//! into rustls types, and the one crypto provider both TLS servers (MQTT over TLS in
//! [`crate::broker::tls`], HTTPS for the page in [`crate::web::tls`]) are built on. Errors are
//! one line for a person, naming the setting and the file. Owns no thread and no state.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WantsServerCert;
use rustls::{ConfigBuilder, ServerConfig};

/// rustls's `ring` provider. rustls 0.23.48 deprecates it only because ring has no
/// post-quantum key exchange (clients then agree on X25519); aws-lc-rs, which has one, needs
/// cmake to build, which not every Raspberry Pi has.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path` (at least one); `setting` names it in errors.
pub fn read_chain(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = format!("{setting} '{}'", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {what}: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "cannot read {what}: no PEM certificate (BEGIN CERTIFICATE) in it"
        ));
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn read_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    let what = format!("{setting} '{}'", path.display());
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("cannot read {what}: no PEM private key (BEGIN PRIVATE KEY) in it")
        }
        e => format!("cannot read {what}: {}", pem_error(&e)),
    })
}

/// A server certificate and key, as (path, setting name) pairs, read and given to `builder`:
/// the error says when the key is not the certificate's.
pub fn with_cert(
    builder: ConfigBuilder<ServerConfig, WantsServerCert>,
    (cert, cert_setting): (&Path, &str),
    (key, key_setting): (&Path, &str),
) -> Result<ServerConfig, String> {
    let chain = read_chain(cert, cert_setting)?;
    let key_der = read_key(key, key_setting)?;
    builder.with_single_cert(chain, key_der).map_err(|e| {
        let what_cert = format!("{cert_setting} '{}'", cert.display());
        let what_key = format!("{key_setting} '{}'", key.display());
        match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{what_key} is not the key of {what_cert}")
            }
            e => format!("cannot use {what_cert} with {what_key}: {e}"),
        }
    })
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file ({other})"),
    }
}

/// A TLS server's configuration that SIGHUP can replace while connections run: each new
/// handshake takes the current one ([`LiveConfig::get`]); connections already open keep the
/// `Arc` they started with, so a renewal drops nothing. A reload that fails (a file half
/// written, a key not matching) keeps the previous configuration.
pub struct LiveConfig {
    /// Names the server in the reload log lines: `TLS listener`, `web page (HTTPS)`.
    what: &'static str,
    /// The files it is built from, for the log line: `certfile '/etc/...'`.
    files: String,
    build: Box<dyn Fn() -> Result<ServerConfig, String> + Send + Sync>,
    current: parking_lot::RwLock<Arc<ServerConfig>>,
}

impl LiveConfig {
    /// Builds the first configuration with `build` (its error is the caller's start-up error)
    /// and keeps `build` for reloads.
    pub fn new(
        what: &'static str,
        files: String,
        build: impl Fn() -> Result<ServerConfig, String> + Send + Sync + 'static,
    ) -> Result<LiveConfig, String> {
        let first = build()?;
        Ok(LiveConfig {
            what,
            files,
            build: Box::new(build),
            current: parking_lot::RwLock::new(Arc::new(first)),
        })
    }

    /// The configuration a new connection uses.
    pub fn get(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Re-reads the files. Logs one line either way: `TLS listener: certificate reloaded from
    /// certfile '…', keyfile '…'` or `TLS listener: certificate not reloaded, still using the
    /// previous one: <why>`.
    pub fn reload(&self) -> Result<(), String> {
        match (self.build)() {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                log::info!("{}: certificate reloaded from {}", self.what, self.files);
                Ok(())
            }
            Err(e) => {
                log::warn!(
                    "{}: certificate not reloaded, still using the previous one: {e}",
                    self.what
                );
                Err(e)
            }
        }
    }
}
