//! The MQTT-over-TLS listener's settings made usable: the certificate chain and key
//! (`certfile`, `keyfile`), the client-certificate policy (`cafile`, `require_certificate`)
//! and `use_identity_as_username`, turned at start into a rustls `ServerConfig` shared by
//! every TLS connection (each gets its own `ServerConnection` from it, see
//! [`pipe`](super::pipe)). SIGHUP re-reads the three files ([`TlsContext::reload`]): new
//! handshakes take the new configuration, open connections keep theirs. Owns no thread; the
//! current configuration sits behind a short leaf lock ([`certs::LiveConfig`]).
//!
//! rustls on [`certs::provider`] (`ring`: no cmake needed, a Raspberry Pi builds it); TLS 1.3
//! and 1.2 only; the PEM files are read by [`crate::certs`]. Client certificates are verified against `cafile` by rustls's
//! `WebPkiClientVerifier` (chain, validity period, the client-auth key usage); a client without
//! one is let in unless `require_certificate`. rustls does not parse certificate subjects, so
//! [`subject_common_name`] reads the CN from the DER itself (after rustls verified the
//! certificate), as Mosquitto does: the first CN of the subject, as UTF-8.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::certs;
use crate::config::Config;

/// What the TLS listener (and the wss listener, which shares its settings) hands each new
/// connection.
pub struct TlsContext {
    /// certfile, keyfile and cafile as last read.
    config: certs::LiveConfig,
    /// `use_identity_as_username`: the client certificate's CN is the username, and a client
    /// without one is refused (CONNACK 0x87 / 0x05).
    pub identity_as_username: bool,
}

impl TlsContext {
    /// The TLS context for `cfg`'s TLS and wss listeners (all of them share it); `Ok(None)`
    /// when there is none.
    /// The error is one line for a person (file unreadable, no certificate in it, key not
    /// matching).
    pub fn from_config(cfg: &Config) -> Result<Option<Arc<TlsContext>>, String> {
        if cfg.tls_listen.is_empty() && cfg.wss_listen.is_empty() {
            return Ok(None);
        }
        let (Some(certfile), Some(keyfile)) = (cfg.certfile.clone(), cfg.keyfile.clone()) else {
            return Err("tls_listen and wss_listen need certfile and keyfile".into());
        };
        let mut files = format!(
            "certfile '{}', keyfile '{}'",
            certfile.display(),
            keyfile.display()
        );
        if let Some(ca) = &cfg.cafile {
            files.push_str(&format!(", cafile '{}'", ca.display()));
        }
        let (cafile, require) = (cfg.cafile.clone(), cfg.require_certificate);
        let config = certs::LiveConfig::new("TLS listener", files, move || {
            server_config(&certfile, &keyfile, cafile.as_deref(), require)
        })?;
        Ok(Some(Arc::new(TlsContext {
            config,
            identity_as_username: cfg.use_identity_as_username,
        })))
    }

    /// The rustls configuration a new TLS connection uses (the latest that loaded).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.get()
    }

    /// Re-reads certfile, keyfile and cafile (SIGHUP); on an error the previous configuration
    /// stays. Logs one line either way (see [`certs::LiveConfig::reload`]).
    pub fn reload(&self) -> Result<(), String> {
        self.config.reload()
    }
}

fn server_config(
    certfile: &Path,
    keyfile: &Path,
    cafile: Option<&Path>,
    require_certificate: bool,
) -> Result<ServerConfig, String> {
    let provider = certs::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match cafile {
        Some(cafile) => {
            let verifier = client_verifier(cafile, require_certificate, &provider)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    certs::with_cert(builder, (certfile, "certfile"), (keyfile, "keyfile"))
}

fn client_verifier(
    cafile: &Path,
    require: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs::read_chain(cafile, "cafile")? {
        roots
            .add(cert)
            .map_err(|e| format!("cafile '{}': {e}", cafile.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if require {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| format!("cafile '{}': {e}", cafile.display()))
}

/// The first Common Name (OID 2.5.4.3) of the subject of the DER certificate `der`, when it
/// is a UTF-8 (or printable / IA5) string without NUL; `None` otherwise. Reads only the
/// structure it walks, with every length checked.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { ... } ... }
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity, then subject.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        let (_, _, after) = tlv(rest)?;
        rest = after;
    }
    let (tag, subject, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, after) = tlv(rdns)?;
        rdns = after;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, after) = tlv(atvs)?;
            atvs = after;
            let (oid_tag, oid, value) = tlv(atv)?;
            if oid_tag != 0x06 || oid != CN {
                continue;
            }
            let (value_tag, value, _) = tlv(value)?;
            // UTF8String, PrintableString, IA5String.
            if !matches!(value_tag, 0x0c | 0x13 | 0x16) {
                return None;
            }
            let name = std::str::from_utf8(value).ok()?;
            if name.is_empty() || name.contains('\0') {
                return None;
            }
            return Some(name.to_owned());
        }
    }
    None
}

/// One DER element at the start of `input`: (tag, contents, what follows). Single-byte tags,
/// definite lengths of up to 4 bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_cn(cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test Org");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_common_name_is_read_from_a_generated_certificate() {
        assert_eq!(
            subject_common_name(&cert_with_cn("sensor-7")).as_deref(),
            Some("sensor-7")
        );
        assert_eq!(
            subject_common_name(&cert_with_cn("kitchen ü")).as_deref(),
            Some("kitchen ü")
        );
    }

    #[test]
    fn subject_common_name_is_none_without_cn_or_for_garbage() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Only Org");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(subject_common_name(&der), None);
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(subject_common_name(&[0x30, 0x84, 0xff, 0xff]), None);
        let good = cert_with_cn("x");
        for cut in 0..good.len() {
            // Truncations never panic.
            let _ = subject_common_name(&good[..cut]);
        }
    }
}
