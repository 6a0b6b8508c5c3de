//! The one URL normaliser. Users give a server's root (`http://host:8000`) or its OpenAI prefix
//! (`http://host:8000/v1`); the request routes, `/v1/models` and `/metrics` are each derived
//! from the same [`ServerUrl`], and credentials in it never reach a file or a log.

use crate::Error;

/// A target server's base URL, normalised: no trailing `/`, no trailing `/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    root: String,
}

impl ServerUrl {
    /// Parses `http(s)://host[:port][/prefix][/v1][/]`.
    pub fn parse(base: &str) -> Result<Self, Error> {
        let b = base.trim().trim_end_matches('/');
        if !(b.starts_with("http://") || b.starts_with("https://")) {
            return Err(Error::Url {
                url: redact(base),
                msg: "must start with http:// or https://".into(),
            });
        }
        let root = b.strip_suffix("/v1").unwrap_or(b).to_string();
        Ok(Self { root })
    }

    /// The server root (`http://host:8000`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// An OpenAI route: `{root}/v1/{path}`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/v1/{}", self.root, path.trim_start_matches('/'))
    }

    /// A route from the root: `{root}/{path}` (native protocols, `/tokenize`).
    pub fn route(&self, path: &str) -> String {
        format!("{}/{}", self.root, path.trim_start_matches('/'))
    }

    /// The Prometheus endpoint, `{root}/metrics`.
    pub fn metrics(&self) -> String {
        self.route("metrics")
    }

    /// True when the server is on this host (localhost, 127.0.0.0/8, ::1): its GPUs are this
    /// host's, so NVML sees them.
    pub fn is_loopback(&self) -> bool {
        let rest = self.root.split_once("://").map_or(&*self.root, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The root with any `user:password@` removed, for files and logs.
    pub fn redacted(&self) -> String {
        redact(&self.root)
    }
}

/// `url` with its userinfo (`user:password@`) replaced by `***@`: credentials in a URL are
/// never stored, printed or logged.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_this_host() {
        for u in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/v1",
            "https://[::1]:443",
            "http://u:p@127.0.0.2",
        ] {
            assert!(ServerUrl::parse(u).unwrap().is_loopback(), "{u}");
        }
        for u in [
            "http://10.0.0.1:8000",
            "http://gpu-host:8000",
            "http://[2001:db8::1]",
        ] {
            assert!(!ServerUrl::parse(u).unwrap().is_loopback(), "{u}");
        }
    }

    #[test]
    fn roots_routes_and_metrics_from_any_base() {
        for base in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            let u = ServerUrl::parse(base).unwrap();
            assert_eq!(u.root(), "http://h:8000");
            assert_eq!(
                u.api("chat/completions"),
                "http://h:8000/v1/chat/completions"
            );
            assert_eq!(u.metrics(), "http://h:8000/metrics");
        }
        let u = ServerUrl::parse("https://gw/openai/v1").unwrap();
        assert_eq!(u.api("models"), "https://gw/openai/v1/models");
        let e = ServerUrl::parse("localhost:8000").unwrap_err().to_string();
        assert!(e.contains("localhost:8000") && e.contains("http://"), "{e}");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("http://admin:sk-123@h:1/v1"), "http://***@h:1/v1");
        assert_eq!(redact("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(redact("no-scheme"), "no-scheme");
        let u = ServerUrl::parse("http://u:p@h:8000").unwrap();
        assert_eq!(u.redacted(), "http://***@h:8000");
        let e = ServerUrl::parse("ftp://u:secret@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
