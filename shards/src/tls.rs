//! TLS server configuration from PEM files (rustls with aws-lc-rs).

use std::path::Path;
use std::sync::Arc;

/// Loads the certificate chain and key; `Ok(None)` when either file is
/// absent (TLS is then not offered, as in seed 002 §6.2.1.6).
pub fn load(cert: &Path, key: &Path) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice()).collect::<Result<_, _>>().map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let private =
        rustls_pemfile::private_key(&mut key_pem.as_slice()).map_err(|e| format!("{}: {e}", key.display()))?.ok_or_else(|| format!("{}: no private key found", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
    Ok(Some(Arc::new(config)))
}
