//! rustls configuration: the listener's certificate (and client CA for
//! mTLS), and the trust roots for https upstreams.
//!
//! Files are read once, by the policy's validation (off the async workers);
//! what this module builds configs from is the material already read, so a
//! reload never reads a certificate twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// What went wrong reading or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificate { path: PathBuf },
    #[error("cannot read a private key from {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("bad CA certificate in {what}: {source}")]
    BadCa {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("the client CA: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the certificate and the key do not fit: {0}")]
    Identity(rustls::Error),
    #[error("{0}")]
    Protocol(rustls::Error),
}

/// The listener's certificate chain, key and optional client CA, as read
/// from the policy's `tls` files.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

/// The crypto provider weir uses everywhere (ring: pure Rust plus asm, no cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; at least one must be there.
/// Blocking.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
/// Blocking.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

/// The listener's TLS config, with ALPN for h2 and HTTP/1.1; client
/// certificates are required when a client CA is given.
pub fn server_config(identity: &Identity) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = match &identity.client_ca {
        Some(ca) => {
            let roots = roots(ca, "the client CA")?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(TlsError::Identity)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Trust for an https upstream: the webpki roots plus the upstream's `ca`.
pub fn upstream_client_config(ca: &[CertificateDer<'static>]) -> Result<ClientConfig, TlsError> {
    let mut roots = roots(ca, "`ca`")?;
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn roots(certs: &[CertificateDer<'static>], what: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|source| TlsError::BadCa { what, source })?;
    }
    Ok(roots)
}
