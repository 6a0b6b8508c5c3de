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

/// Longest a TLS handshake may take before the connection is dropped: a client that connects
/// and never says hello holds nothing for long.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server side of a TLS handshake on `sock`; None when it failed or timed out (logged at
/// debug, naming `peer`).
///
/// A failed handshake's alert (a missing client certificate, an unknown CA) must reach the
/// client, so the socket is then closed gracefully: our side shut, and what the client already
/// sent read and dropped until it closes too (at most a second). Dropping it with those bytes
/// unread resets the connection, which can discard the alert: under TLS 1.3 the client sends its
/// request before the server has checked its certificate, and an mTLS refusal was seen as a
/// bare reset instead of `CertificateRequired`, now and then, on a loaded host.
pub async fn accept<IO>(
    acceptor: &TlsAcceptor,
    sock: IO,
    peer: impl std::fmt::Display,
) -> Option<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hs = acceptor.accept(sock).into_fallible();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err((e, mut io))) => {
            tracing::debug!("TLS handshake with {peer} failed: {e}");
            let _ = io.shutdown().await;
            let mut buf = [0u8; 4096];
            let drain = async {
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake with {peer} timed out");
            None
        }
    }
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
