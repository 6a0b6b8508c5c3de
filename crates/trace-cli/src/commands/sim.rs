//! `trace sim`: serve the OpenAI-compatible engine simulator until Ctrl-C or SIGTERM; or, with
//! `--fit CAPTURE`, fit the simulator's engine model to a real engine's capture and write it as
//! a profile file that `--profile FILE.json` serves (validated on a held-out stage with
//! `--validate STAGE` when the analyzer is built in).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use trace_sim::{FaultSpec, OutputDist, SimConfig, TimeModel};

const EXAMPLES: &str = "\
Examples:
  trace sim --port 8000
  trace sim --port 8000 --profile lmdeploy-0.4.0-3090-llama3-8b
  trace sim --port 8000 --ttft 50ms --itl 10ms
  trace sim --port 8000 --fault reset=0.01,http500=0.05 --seed 7 --truth truth.jsonl
  curl -N localhost:8000/v1/chat/completions -H 'X-Sim-Fault: multi-token:3' \\
    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":8,\"stream\":true}'

  trace sim --fit llamacpp.parquet --stages rate=1,rate=2,rate=4 --validate rate=8 -o llamacpp.json
      fit the engine model to the lower stages of a capture, check it predicts the highest
  trace sim --port 8000 --profile llamacpp.json
      serve the fitted model

Profiles: vllm-0.4.1-3090-llama3-8b (default), lmdeploy-0.4.0-3090-llama3-8b, fixed, or a
profile file written by --fit.
Faults (--fault KIND=FRACTION,... or header X-Sim-Fault: KIND): http500, http429, error-event,
reset, stall, malformed, no-done, multi-token[:K], keep-alive.";

/// Arguments of `trace sim`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SimArgs {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Engine profile: scheduler limits and step-time model fitted to a published run.
    #[arg(long, default_value = trace_sim::DEFAULT_PROFILE, conflicts_with_all = ["ttft", "itl"])]
    pub profile: String,
    /// Fixed time model: constant time to first token per request (no batching effects).
    #[arg(long, value_parser = crate::parse::duration_or_zero)]
    pub ttft: Option<Duration>,
    /// Fixed time model: constant time between tokens (default 10ms when only --ttft is given).
    #[arg(long, value_parser = crate::parse::duration_or_zero)]
    pub itl: Option<Duration>,
    /// Override the profile's maximum running sequences.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Override the profile's KV-cache capacity, in blocks.
    #[arg(long)]
    pub kv_blocks: Option<u64>,
    /// Override the profile's tokens per KV block.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Override the profile's token budget per step.
    #[arg(long)]
    pub max_batched_tokens: Option<u32>,
    /// Faults with fractions, e.g. `reset=0.01,http500=0.05,multi-token:3=0.1`.
    #[arg(long, value_parser = parse_faults)]
    pub fault: Option<FaultSpec>,
    /// Write ground truth (arrival and per-event write times, ns since the UNIX epoch) as JSON lines.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Serve from N threads, each pinned to one CPU and accepting on its own listener of the
    /// one port: N independent servers for benchmarking a load generator past one core (the
    /// fixed time model only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Seed for faults and sampled output lengths.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output lengths for requests without `ignore_eos`: `lognormal:MEAN:SIGMA`, `uniform:LO:HI`
    /// or `exp:MEAN`, capped by max_tokens (default: always max_tokens).
    #[arg(long, value_parser = parse_output_dist)]
    pub output_dist: Option<OutputDist>,
    /// Served model name (default: the profile's model).
    #[arg(long)]
    pub model: Option<String>,
    /// Output tokens when a request sets no max_tokens.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: u32,
    /// Count prompt tokens with this Hugging Face tokenizer.json (default: whitespace words).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Reasoning tokens before each answer (a thinking phase: chat's reasoning_content,
    /// Responses' reasoning_text, Messages' thinking); at least one answer token follows.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub reasoning_tokens: u32,
    /// Turn the prefix cache off (each request prefills its whole prompt; no cached tokens).
    #[arg(long, conflicts_with = "prefix_cache_tokens")]
    pub no_prefix_cache: bool,
    /// Prefix-cache capacity in tokens (default: the profile's KV-cache capacity).
    #[arg(long, value_name = "TOKENS")]
    pub prefix_cache_tokens: Option<u64>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to show a certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Fit the engine model to this capture (a `trace replay` run against a real engine) and
    /// write the profile to -o instead of serving.
    #[arg(long, value_name = "CAPTURE", requires = "output")]
    pub fit: Option<PathBuf>,
    /// With --fit: the stages to fit on (default: all but the --validate stage).
    #[arg(long, value_name = "STAGES", value_delimiter = ',', requires = "fit")]
    pub stages: Vec<String>,
    /// With --fit: predict this held-out stage with the fitted model and compare with the
    /// capture (saturation verdict, TTFT and TPOT medians, throughput).
    #[arg(long, value_name = "STAGE", requires = "fit")]
    pub validate: Option<String>,
    /// With --fit: the profile file to write.
    #[arg(short, long, value_name = "PROFILE.json")]
    pub output: Option<PathBuf>,
}

fn parse_faults(s: &str) -> Result<FaultSpec, String> {
    s.parse().map_err(|e: trace_sim::Error| e.to_string())
}

fn parse_output_dist(s: &str) -> Result<OutputDist, String> {
    s.parse().map_err(|e: trace_sim::Error| e.to_string())
}

/// Builds the validated simulator configuration from the flags.
pub fn config(args: &SimArgs) -> anyhow::Result<SimConfig> {
    let mut cfg = match (args.ttft, args.itl) {
        (None, None) => SimConfig::from_profile(&args.profile)?,
        (ttft, itl) => SimConfig::fixed(
            ttft.unwrap_or(Duration::from_millis(50)),
            itl.unwrap_or(Duration::from_millis(10)),
        ),
    };
    match &mut cfg.time {
        TimeModel::Engine(p) => {
            if let Some(v) = args.max_num_seqs {
                p.max_num_seqs = v;
            }
            if let Some(v) = args.kv_blocks {
                p.kv_blocks = v;
                p.watermark_blocks = p.watermark_blocks.min(v / 100);
            }
            if let Some(v) = args.block_size {
                p.block_size = v;
            }
            if let Some(v) = args.max_batched_tokens {
                p.max_batched_tokens = v;
            }
        }
        TimeModel::Fixed { .. } => {
            let engine_flags = [
                args.max_num_seqs.is_some(),
                args.kv_blocks.is_some(),
                args.block_size.is_some(),
                args.max_batched_tokens.is_some(),
            ];
            if engine_flags.into_iter().any(|b| b) {
                anyhow::bail!(
                    "--max-num-seqs, --kv-blocks, --block-size and --max-batched-tokens apply to engine profiles, not the fixed time model"
                );
            }
        }
    }
    if let Some(f) = &args.fault {
        cfg.faults = f.clone();
    }
    if let Some(m) = &args.model {
        cfg.model = m.clone();
    }
    cfg.truth = args.truth.clone();
    cfg.tokenizer = args.tokenizer.clone();
    cfg.reasoning_tokens = args.reasoning_tokens;
    if args.no_prefix_cache {
        cfg.prefix_cache_tokens = None;
    } else if let Some(t) = args.prefix_cache_tokens {
        cfg.prefix_cache_tokens = Some(t);
    }
    cfg.tls = args
        .tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(cert, key)| trace_sim::SimTls {
            cert,
            key,
            client_ca: args.tls_client_ca.clone(),
        });
    cfg.seed = args.seed;
    cfg.output_dist = args.output_dist;
    cfg.default_max_tokens = args.default_max_tokens;
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `trace sim`: serves until Ctrl-C or SIGTERM, or fits a profile (`--fit`).
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    if let Some(capture) = &args.fit {
        return super::sim_fit::run(&args, capture);
    }
    let cfg = config(&args)?;
    let addr = SocketAddr::new(args.host, args.port);
    if args.workers > 1 {
        let stop = tokio_util::sync::CancellationToken::new();
        // The signal listener runs on a runtime of its own thread: the workers block this one.
        let signals = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the signal runtime")?;
        {
            let _in = signals.enter();
            crate::signal::on_stop(
                stop.clone(),
                "trace sim: stopping",
                "trace sim: aborted".into(),
            );
        }
        let (profile, model) = (cfg.profile.clone(), cfg.model.clone());
        let workers = args.workers;
        trace_sim::serve_workers(cfg, addr, workers as usize, stop, |local| {
            eprintln!(
                "trace sim: profile {profile} serving model {model} on http://{local} from \
                 {workers} workers (Ctrl-C stops)"
            );
        })?;
        signals.shutdown_background();
        return Ok(ExitCode::SUCCESS);
    }
    // One core's worth of runtime, as the simulator is designed (one scheduler task per engine).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the simulator runtime")?;
    rt.block_on(async move {
        let listener = trace_sys::listen(addr)
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener
            .local_addr()
            .with_context(|| format!("reading the address bound for {addr}"))?;
        eprintln!(
            "trace sim: profile {} serving model {} on {}://{local} (Ctrl-C stops)",
            cfg.profile,
            cfg.model,
            if cfg.tls.is_some() { "https" } else { "http" }
        );
        let stop = tokio_util::sync::CancellationToken::new();
        crate::signal::on_stop(
            stop.clone(),
            "trace sim: stopping",
            "trace sim: aborted".into(),
        );
        trace_sim::serve(cfg, listener, stop).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SimArgs,
    }

    fn cfg(argv: &[&str]) -> anyhow::Result<SimConfig> {
        let t = T::try_parse_from(std::iter::once("sim").chain(argv.iter().copied()))?;
        config(&t.a)
    }

    #[test]
    fn flags_build_configs() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.profile, trace_sim::DEFAULT_PROFILE);
        let c = cfg(&["--ttft", "50ms", "--itl", "10ms"]).unwrap();
        assert_eq!(
            c.time,
            TimeModel::Fixed {
                ttft: Duration::from_millis(50),
                itl: Duration::from_millis(10)
            }
        );
        let c = cfg(&[
            "--profile",
            "lmdeploy-0.4.0-3090-llama3-8b",
            "--max-num-seqs",
            "4",
            "--fault",
            "reset=0.5",
        ])
        .unwrap();
        match c.time {
            TimeModel::Engine(p) => assert_eq!(p.max_num_seqs, 4),
            TimeModel::Fixed { .. } => panic!("expected an engine"),
        }
        assert_eq!(c.faults.entries.len(), 1);
        assert!(
            cfg(&["--profile", "nope"])
                .unwrap_err()
                .to_string()
                .contains("'nope'")
        );
        assert!(cfg(&["--fault", "reset"]).is_err());
        assert!(cfg(&["--ttft", "5ms", "--kv-blocks", "3"]).is_err());
        assert!(cfg(&["--max-num-seqs", "0"]).is_err());
    }
}
