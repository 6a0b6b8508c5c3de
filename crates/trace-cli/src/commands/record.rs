//! `trace record`: parses [`RecordArgs`] into a [`trace_record::RecordConfig`], starts the
//! embedded simulator when no `--upstream` is given, runs the recording proxy with Ctrl-C /
//! SIGTERM handling, and reports what was captured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;
use trace_record::RecordConfig;

use crate::parse::StoreArg;

const EXAMPLES: &str = "\
Examples:
  trace record --listen 127.0.0.1:9000 --upstream http://127.0.0.1:8000 -o captured.parquet
      point clients at http://127.0.0.1:9000 instead of the engine; Ctrl-C to stop
  trace record --duration 10m --store prompts -o demo.parquet
      fronts the embedded simulator: a working demo with no engine
  trace replay captured.parquet --url http://127.0.0.1:8000 -o run.parquet
      re-sends the capture at its recorded arrival times

Every route is forwarded unchanged; one row is written per POST .../chat/completions or
.../completions request. No header is ever written to the file (Authorization and API keys
included); prompts and outputs only with --store.
The first Ctrl-C (or SIGTERM) stops accepting and drains in-flight streams (--drain-timeout),
then closes a valid file; a second one aborts, leaving the flushed data readable in
OUT.parquet.partial/.
Exit status: 0 done, 130 stopped by Ctrl-C or SIGTERM (the file is still valid), 2 error.";

/// Arguments of `trace record`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RecordArgs {
    /// Address the proxy listens on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The engine's base URL (http://HOST:PORT); without it, the embedded simulator.
    #[arg(long)]
    pub upstream: Option<String>,
    /// The trace file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing trace at the output path (without it, an existing file is refused).
    #[arg(long)]
    pub force: bool,
    /// Stop after this long (e.g. 10m, 1h30m).
    #[arg(long, value_parser = crate::parse::duration)]
    pub duration: Option<Duration>,
    /// Stop after this many recorded requests.
    #[arg(long, value_parser = crate::parse::positive_u64)]
    pub max_requests: Option<u64>,
    /// Also store prompts and/or outputs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub store: Vec<StoreArg>,
    /// Engine label written into the file's metadata.
    #[arg(long)]
    pub label: Option<String>,
    /// How long in-flight streams may finish after a stop.
    #[arg(long, default_value = "30s", value_parser = crate::parse::duration_or_zero)]
    pub drain_timeout: Duration,
    /// Upstream silence (no headers or no bytes) after which a request is a timeout.
    #[arg(long, default_value = "300s", value_parser = crate::parse::duration)]
    pub idle_timeout: Duration,
    /// Serving threads, each with its own listener on the port; 0: one per CPU, at most 4.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Listen with HTTPS using this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also record this route (besides chat, completions, responses, messages and the TGI,
    /// Triton and SGLang native ones): a JSON-over-SSE route, read at --text-field.
    #[arg(long, value_name = "PATH")]
    pub custom_path: Option<String>,
    /// Where --custom-path's events hold their text delta, dotted (default: text).
    #[arg(long, value_name = "FIELD", requires = "custom_path")]
    pub text_field: Option<String>,
    /// How the upstream is reached (an https:// upstream's CA, client certificate, headers).
    #[command(flatten)]
    pub transport: super::transport::TransportArgs,
}

impl RecordArgs {
    /// The validated configuration, in front of `upstream`.
    pub fn to_config(&self, upstream: String) -> anyhow::Result<RecordConfig> {
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            anyhow::bail!(
                "invalid --upstream '{}': expected http://HOST:PORT",
                trace_client::redact(&upstream)
            );
        }
        let mut cfg = RecordConfig::new(upstream, self.output.clone());
        cfg.listen = self.listen;
        cfg.duration = self.duration;
        cfg.max_requests = self.max_requests;
        cfg.store_prompts = self.store.contains(&StoreArg::Prompts);
        cfg.store_outputs = self.store.contains(&StoreArg::Outputs);
        cfg.label = self.label.clone();
        cfg.drain_timeout = self.drain_timeout;
        cfg.idle_timeout = self.idle_timeout;
        cfg.threads = self.threads;
        cfg.force = self.force;
        cfg.tls = self.tls_cert.clone().zip(self.tls_key.clone());
        cfg.custom_route = self
            .custom_path
            .clone()
            .map(|p| (p, self.text_field.clone()));
        cfg.upstream_transport = self.transport.to_transport()?;
        Ok(cfg)
    }
}

/// Runs `trace record`.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    if let Some(u) = &args.upstream {
        args.to_config(u.clone())?;
    }
    let sim = match &args.upstream {
        Some(_) => None,
        None => Some(crate::embedded::start()?),
    };
    let upstream = args
        .upstream
        .clone()
        .or_else(|| sim.as_ref().map(|s| s.url()))
        .unwrap_or_default();
    let cfg = args.to_config(upstream)?;
    args.transport.warn();
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let output = cfg.output.clone();
    // The proxy serves on threads of its own; this runtime only waits for the stop and drains.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let stop = CancellationToken::new();
    let done = rt.block_on(async {
        let interrupted = crate::signal::on_stop(
            stop.clone(),
            "stopping: no new requests; draining in-flight streams (Ctrl-C again to abort)",
            format!(
                "aborted; the data flushed so far is readable in {}.partial",
                output.display()
            ),
        );
        trace_record::run(cfg, stop.clone(), |l| {
            eprintln!(
                "recording on {scheme}://{} -> {}",
                l.addr,
                trace_client::redact(&l.upstream)
            );
        })
        .await
        .map(|s| (s, interrupted.exit_code()))
    });
    // Idle client connections and the signal listener must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Some(sim) = sim {
        crate::embedded::stop(sim);
    }
    let (summary, interrupted) =
        done.with_context(|| format!("recording into {}", output.display()))?;
    eprintln!(
        "wrote {} ({} rows, {} with errors; {} other requests forwarded unrecorded, {} refused after the stop)",
        summary.output.display(),
        summary.rows,
        summary.errors,
        summary.unrecorded,
        summary.refused
    );
    if let Some(code) = interrupted {
        eprintln!("stopped by a signal; the file holds what was captured");
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: RecordArgs,
    }

    #[test]
    fn parses_store_list_and_rejects_bad_upstream() {
        let t = T::try_parse_from(["x", "-o", "a.parquet", "--store", "prompts,outputs"]).unwrap();
        let c = t.a.to_config("http://127.0.0.1:1".into()).unwrap();
        assert!(c.store_prompts && c.store_outputs && t.a.upstream.is_none());
        let t =
            T::try_parse_from(["x", "-o", "a.parquet", "--upstream", "localhost:8000"]).unwrap();
        let e =
            t.a.to_config("localhost:8000".into())
                .unwrap_err()
                .to_string();
        assert!(e.contains("localhost:8000"), "{e}");
        assert!(T::try_parse_from(["x", "-o", "a", "--store", "secrets"]).is_err());
        assert!(T::try_parse_from(["x", "-o", "a", "--max-requests", "0"]).is_err());
    }
}
