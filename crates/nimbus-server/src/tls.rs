//! HTTPS on the public listener (feature `tls`): rustls with the ring provider, TLS 1.2
//! and 1.3, ALPN `http/1.1`. The accept loop (`conn.rs`) handshakes each accepted
//! connection in its own task, with a timeout, so a failed handshake (or a plain-HTTP
//! client on the TLS port) only closes that connection.

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Reads the PEM certificate chain and private key and builds the server configuration.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(e, "certificate", cert))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate {}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
            cert.display()
        );
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(e, "key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS: protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "TLS key {} does not fit certificate {} (or either is unusable)",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_error(e: rustls::pki_types::pem::Error, what: &str, path: &Path) -> anyhow::Error {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => anyhow::Error::new(io)
            .context(format!("cannot read TLS {what} file {}", path.display())),
        Error::NoItemsFound => {
            anyhow::anyhow!("TLS {what} file {}: no PEM {what} found", path.display())
        }
        other => anyhow::anyhow!(
            "TLS {what} file {}: invalid PEM ({other:?})",
            path.display()
        ),
    }
}
