//! TLS plumbing shared by the client, the recording proxy and the simulator: the one rustls
//! crypto provider (ring: no OpenSSL, no aws-lc C build), PEM files read with their path in
//! every error, and the server side's acceptor (certificate, key, optional client CA for mTLS,
//! ALPN h2 then http/1.1).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;

/// A certificate or key file that cannot be used, or a configuration rustls refused.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct TlsFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> TlsFileError {
    TlsFileError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Makes ring the process's rustls provider (reqwest and tokio-rustls are built without one).
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one is used, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| err(path, e.to_string()))
}

/// The certificates of a PEM file; none is an error.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM certificate (BEGIN CERTIFICATE) in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| err(path, format!("no PEM private key in it: {e}")))
}

/// A server's TLS settings: `cert` (chain) and `key`, PEM; with `client_ca`, clients must show
/// a certificate it signed (mTLS). `h2` offers HTTP/2 by ALPN before HTTP/1.1.
pub fn acceptor(
    cert: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
    h2: bool,
) -> Result<TlsAcceptor, TlsFileError> {
    install_provider();
    let chain = certs(cert)?;
    let k = key(key_file)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| err(ca, e.to_string()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| err(ca, e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, k)
        .map_err(|e| err(key_file, format!("does not fit {}: {e}", cert.display())))?;
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pem");
        std::fs::write(&p, "hello").unwrap();
        let e = certs(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = key(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.pem") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = certs(&d.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
