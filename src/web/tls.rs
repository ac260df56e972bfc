//! HTTPS for the control page: which certificate and key the page uses (`web_certfile` /
//! `web_keyfile`, or `certfile` / `keyfile` with `web_tls_from_mqtt`), read once at start into
//! a rustls [`ServerConfig`]. Checked before anything else starts, so an unreadable file or a
//! key that is not the certificate's stops the broker with one line (`main` exits 2).
//!
//! rustls with the ring provider only (TLS 1.2 and 1.3, its safe defaults), ALPN `http/1.1`:
//! the page speaks HTTP/1.1, one request per connection ([`super::conn`]).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::Config;

/// The page's TLS configuration: `None` for plain HTTP. Errors are one line naming the setting
/// and the file.
pub fn load(config: &Config) -> Result<Option<Arc<ServerConfig>>, String> {
    let (cert, key, names) = match (&config.web_certfile, &config.web_keyfile) {
        (Some(c), Some(k)) => (c, k, ("web_certfile", "web_keyfile")),
        _ if config.web_tls_from_mqtt => match (&config.certfile, &config.keyfile) {
            (Some(c), Some(k)) => (c, k, ("certfile", "keyfile")),
            _ => return Err("web_tls_from_mqtt needs certfile and keyfile".to_string()),
        },
        _ => return Ok(None),
    };
    server_config(cert, key, names).map(|c| Some(Arc::new(c)))
}

/// A server configuration from a PEM certificate chain and its key; `names` are the settings
/// they came from, for the error.
pub fn server_config(cert: &Path, key: &Path, names: (&str, &str)) -> Result<ServerConfig, String> {
    let (cert_name, key_name) = names;
    let what_cert = format!("{cert_name} '{}'", cert.display());
    let what_key = format!("{key_name} '{}'", key.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {what_cert}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {what_cert}: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "cannot read {what_cert}: no PEM certificate (BEGIN CERTIFICATE) in it"
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("cannot read {what_key}: no PEM private key (BEGIN PRIVATE KEY) in it")
        }
        e => format!("cannot read {what_key}: {}", pem_error(&e)),
    })?;
    // rustls 0.23.48 deprecates its ring provider only because it lacks post-quantum key
    // exchange; aws-lc-rs, which has it, needs cmake to build (not on every Raspberry Pi).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{what_key} is not the key of {what_cert}")
            }
            e => format!("cannot use {what_cert} with {what_key}: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file ({other})"),
    }
}
