//! TLS client configuration (rustls with the aws-lc-rs provider).
//!
//! Test servers almost always use self-signed certificates, so certificate
//! verification is off unless `--tls-verify` is given. Even then the
//! handshake signatures are still checked, so a broken server TLS stack is
//! noticed; only the certificate's chain of trust and name are skipped.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Installs aws-lc-rs as the process-wide rustls provider. Done explicitly
/// because other crates in the dependency graph may enable `ring` too, in
/// which case rustls refuses to guess.
pub fn install_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = aws_lc_rs::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot read CA file {path}: {source}")]
    CaFile { path: String, source: rustls::pki_types::pem::Error },
    #[error("no trusted CA certificates found (system store empty and no --tls-ca given)")]
    NoRoots,
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// Builds the connector. With `verify`, trusts the system store plus
/// `extra_ca`; without, accepts any certificate.
pub fn connector(verify: bool, extra_ca: Option<&Path>) -> Result<TlsConnector, TlsSetupError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = if verify {
        builder.with_root_certificates(root_store(extra_ca)?).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCert::new(&provider))).with_no_client_auth()
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn root_store(extra_ca: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // Unreadable individual system certificates are skipped, as browsers do.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|source| TlsSetupError::CaFile { path: path.display().to_string(), source })?;
        roots.add_parsable_certificates(certs);
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(roots)
}

/// SNI / verification name for `host` (DNS name or IP literal).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsSetupError::ServerName(host.to_owned()))
}

/// Accepts any server certificate but still verifies handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCert {
    fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyCert { algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("mx.example.test"), Ok(ServerName::DnsName(_))));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn connectors_build() {
        install_provider();
        assert!(connector(false, None).is_ok());
        assert!(matches!(connector(true, Some(Path::new("/nonexistent/ca.pem"))), Err(TlsSetupError::CaFile { .. })));
    }
}
