//! The transport flags every verb that talks to a server shares (replay's target, record's
//! upstream): TLS roots and client certificate, `--insecure`, extra headers, `--http1`.

use std::path::PathBuf;

use trace_client::Transport;

/// The transport flags.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Transport")]
pub struct TransportArgs {
    /// PEM file of extra CA certificates to trust (besides the system's) for an HTTPS URL.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Do not verify the server's certificate (said on stderr, stored in the run's metadata).
    #[arg(long)]
    pub insecure: bool,

    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Extra request header, 'Name: value' (repeatable). Values are never stored or printed.
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'",
          value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Speak HTTP/1.1 only (by default HTTP/2 is used where the server offers it by ALPN).
    #[arg(long)]
    pub http1: bool,

    /// Replay: send plain http:// requests through hyper, the client HTTPS uses, instead of the
    /// lean HTTP/1.1 client (~5 KiB per in-flight stream to hyper's ~30). The recording proxy's
    /// upstream is always hyper.
    #[arg(long)]
    pub hyper: bool,
}

/// Checks the header at parse time (exit 2 naming it); kept as text for clap's `Clone`.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = Transport::parse_header(s)?;
    Ok((k.to_string(), v.to_str().unwrap_or_default().to_string()))
}

impl TransportArgs {
    /// The library's settings; every file named is read and checked now, so a bad certificate
    /// fails before anything is sent.
    pub fn to_transport(&self) -> anyhow::Result<Transport> {
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers
                .push(Transport::parse_header(&format!("{k}: {v}")).map_err(anyhow::Error::msg)?);
        }
        let t = Transport {
            cacert: self.cacert.clone(),
            insecure: self.insecure,
            identity: self.cert.clone().zip(self.key.clone()),
            headers,
            http1_only: self.http1,
            hyper: self.hyper,
        };
        t.check()?;
        Ok(t)
    }

    /// Says `--insecure` loudly, once, before the run.
    pub fn warn(&self) {
        if self.insecure {
            eprintln!(
                "trace: WARNING: --insecure: the server's certificate is not verified; anyone \
                 on the path can read and change this traffic"
            );
        }
    }
}
