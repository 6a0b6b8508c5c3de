//! How the client reaches a server: TLS (rustls with ring, through trace_sys::tls: no OpenSSL;
//! system roots by default, `--cacert`, `--insecure`, mTLS), extra
//! headers, and the HTTP version (HTTP/2 when TLS's ALPN offers it, `--http1` to refuse).
//! One builder for every client the tool makes: requests, the probe, `/tokenize`, `/metrics`
//! and the recording proxy's upstream, so a gateway that needs a CA or a header gets it on
//! every route.
//!
//! Header values are secrets as far as this tool knows (gateway tokens travel in them): they
//! are marked sensitive, and only their names are ever stored ([`Transport::header_names`]).

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;

/// Transport settings shared by every client of one run.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// Extra PEM roots (`--cacert`), trusted besides the system's.
    pub cacert: Option<PathBuf>,
    /// Skip certificate verification (`--insecure`).
    pub insecure: bool,
    /// Client certificate and key for mTLS (`--cert`, `--key`), PEM.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Extra request headers (`--header 'K: V'`), already checked.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// HTTP/1.1 only, even where ALPN offers h2 (`--http1`).
    pub http1_only: bool,
    /// Plain `http://` requests through hyper too, not the lean HTTP/1.1 client (`--hyper`).
    pub hyper: bool,
}

impl Transport {
    /// Parses one `--header` value, `Name: value`; the value is marked sensitive.
    pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
        let (k, v) = s
            .split_once(':')
            .ok_or_else(|| "expected 'Name: value'".to_string())?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("'{}' is not a valid header name", k.trim()))?;
        let mut value = HeaderValue::from_str(v.trim())
            .map_err(|_| format!("the value of '{name}' holds characters a header cannot"))?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    /// The names of the extra headers, for the run's metadata (never the values).
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(k, _)| k.to_string()).collect()
    }

    /// Reads and checks every file named (before anything is sent), so a bad certificate is
    /// an error naming the file, not a failed handshake on every request.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(p) = &self.cacert {
            certs(p)?;
        }
        if let Some((c, k)) = &self.identity {
            certs(c)?;
            trace_sys::tls::key(k).map_err(tls_file)?;
        }
        Ok(())
    }

    /// A reqwest builder with these settings applied (the caller adds timeouts and pools).
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, Error> {
        trace_sys::tls::install_provider();
        let mut b = reqwest::Client::builder().no_proxy().tcp_nodelay(true);
        if let Some(p) = &self.cacert {
            let mut roots = Vec::new();
            for der in certs(p)? {
                roots.push(reqwest::Certificate::from_der(der.as_ref()).map_err(|e| {
                    Error::Tls {
                        path: p.clone(),
                        msg: e.to_string(),
                    }
                })?);
            }
            b = b.tls_certs_merge(roots);
        }
        if self.insecure {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        if let Some((c, k)) = &self.identity {
            self.check()?;
            let mut pem = read(c)?;
            pem.push(b'\n');
            pem.extend(read(k)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| Error::Tls {
                path: c.clone(),
                msg: format!("with key {}: {}", k.display(), crate::error_chain(&e)),
            })?;
            b = b.identity(id);
        }
        if !self.headers.is_empty() {
            let mut map = HeaderMap::new();
            for (k, v) in &self.headers {
                map.append(k.clone(), v.clone());
            }
            b = b.default_headers(map);
        }
        if self.http1_only {
            b = b.http1_only();
        }
        Ok(b)
    }
}

fn tls_file(e: trace_sys::tls::TlsFileError) -> Error {
    Error::Tls {
        path: e.path,
        msg: e.msg,
    }
}

fn certs(p: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    trace_sys::tls::certs(p).map_err(tls_file)
}

fn read(p: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|e| Error::Tls {
        path: p.to_path_buf(),
        msg: e.to_string(),
    })
}

/// The rustls error in a chain, if the failure was TLS's (an unknown issuer, a name mismatch,
/// a refused client certificate).
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error's source() skips the error it wraps, which is where rustls's sits (inside
        // one or two io::Errors: hyper-rustls wraps tokio-rustls's).
        let mut io = c.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t.to_string());
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_their_values_are_sensitive() {
        let (k, v) = Transport::parse_header("X-Gateway-Key:  sk-secret ").unwrap();
        assert_eq!(k.as_str(), "x-gateway-key");
        assert_eq!(v.to_str().unwrap(), "sk-secret");
        assert!(v.is_sensitive());
        assert!(format!("{v:?}").contains("Sensitive"));
        assert!(Transport::parse_header("no colon").is_err());
        assert!(Transport::parse_header("bad name: v").is_err());
        assert!(Transport::parse_header("k: a\nb").is_err());
    }
}
