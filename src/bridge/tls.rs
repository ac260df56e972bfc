//! The rustls client configuration of a bridge over TLS, on [`crate::certs`]'s provider and PEM
//! reading: the remote broker's certificate must chain to `bridge_cafile`; a client
//! certificate is offered when `bridge_certfile`/`bridge_keyfile` are given; with
//! `bridge_insecure` the certificate's name is not checked against the address (Mosquitto's
//! meaning: the chain still is). Built before the broker starts, so a bad file is a bad
//! setting (one line, exit code 2). Owns no thread and no state.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};

use super::config::BridgeConfig;
use crate::certs;

/// The client configuration of `bridge`, or `None` when it does not use TLS. The error is one
/// line naming the bridge, the setting and the file.
pub fn client_config(bridge: &BridgeConfig) -> Result<Option<Arc<ClientConfig>>, String> {
    let Some(tls) = &bridge.tls else {
        return Ok(None);
    };
    let name = &bridge.name;
    let mut roots = RootCertStore::empty();
    for cert in certs::read_chain(&tls.cafile, "bridge_cafile")
        .map_err(|e| format!("bridge '{name}': {e}"))?
    {
        roots.add(cert).map_err(|e| {
            format!(
                "bridge '{name}': bridge_cafile '{}' has a certificate rustls cannot use: {e}",
                tls.cafile.display()
            )
        })?;
    }
    let provider = certs::provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            format!(
                "bridge '{name}': bridge_cafile '{}': {e}",
                tls.cafile.display()
            )
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure {
        Arc::new(AnyName(webpki))
    } else {
        webpki
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("bridge '{name}': {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = certs::read_chain(cert, "bridge_certfile")
                .map_err(|e| format!("bridge '{name}': {e}"))?;
            let key_der = certs::read_key(key, "bridge_keyfile")
                .map_err(|e| format!("bridge '{name}': {e}"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "bridge '{name}': bridge_keyfile '{}' does not go with bridge_certfile '{}': {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// `bridge_insecure`: the WebPKI verifier, except that a certificate for another name passes.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
