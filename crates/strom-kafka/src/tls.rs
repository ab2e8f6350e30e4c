//! TLS for the Kafka listener (rustls with the ring backend): a certificate chain and key
//! from PEM files, no client certificates.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::config::TlsFiles;

pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|error| format!("cannot read certificates from {}: {error}", files.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|error| format!("cannot read a private key from {}: {error}", files.key_file.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| format!("the certificate and key do not fit: {error}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
