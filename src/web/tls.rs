//! HTTPS for the control page: which certificate and key the page uses (`web_certfile` /
//! `web_keyfile`, or `certfile` / `keyfile` with `web_tls_from_mqtt`), read at start into
//! a rustls [`ServerConfig`] and again on SIGHUP ([`certs::LiveConfig`]: new connections take
//! the new one, a bad file keeps the old one). Checked before anything else starts, so an unreadable file or a
//! key that is not the certificate's stops the broker with one line (`main` exits 2).
//!
//! rustls on [`certs::provider`] (TLS 1.2 and 1.3, its safe defaults), ALPN `http/1.1`:
//! the page speaks HTTP/1.1, one request per connection ([`super::conn`]).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::certs;
use crate::config::Config;

/// The page's TLS configuration: `None` for plain HTTP. Errors are one line naming the setting
/// and the file.
pub fn load(config: &Config) -> Result<Option<Arc<certs::LiveConfig>>, String> {
    let (cert, key, names) = match (&config.web_certfile, &config.web_keyfile) {
        (Some(c), Some(k)) => (c, k, ("web_certfile", "web_keyfile")),
        _ if config.web_tls_from_mqtt => match (&config.certfile, &config.keyfile) {
            (Some(c), Some(k)) => (c, k, ("certfile", "keyfile")),
            _ => return Err("web_tls_from_mqtt needs certfile and keyfile".to_string()),
        },
        _ => return Ok(None),
    };
    let files = format!(
        "{} '{}', {} '{}'",
        names.0,
        cert.display(),
        names.1,
        key.display()
    );
    let (cert, key) = (cert.clone(), key.clone());
    let live = certs::LiveConfig::new("web page (HTTPS)", files, move || {
        server_config(&cert, &key, names)
    })?;
    Ok(Some(Arc::new(live)))
}

/// A server configuration from a PEM certificate chain and its key; `names` are the settings
/// they came from, for the error.
fn server_config(cert: &Path, key: &Path, names: (&str, &str)) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth();
    let mut config = certs::with_cert(builder, (cert, names.0), (key, names.1))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
