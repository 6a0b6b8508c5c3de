//! `trace replay`: parses [`ReplayArgs`] into a [`trace_replay::ReplayConfig`], starts the
//! embedded simulator when no `--url` is given, runs the replay on a tokio runtime with a
//! progress line on stderr and Ctrl-C / SIGTERM handling, then prints the per-stage summary
//! table on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use trace_client::{ClientConfig, Endpoint};
use trace_replay::dispatch::{Counters, Timer};
use trace_replay::workload::{RandomSpec, WorkloadSpec};
use trace_replay::{Arrival, ReplayConfig};

use crate::parse::StoreArg;

/// Where runs go when no `-o` is given: `runs/<label or sim>-<UTC time>.parquet`.
const RUNS_DIR: &str = "runs";

const EXAMPLES: &str = "\
Examples:
  trace replay --rate 5
      random prompts at 5 req/s (Poisson) against the embedded simulator; writes runs/sim-*.parquet
  trace replay random --input-len 1024 --output-len 1024 --rate 1,2,5,8 -n 200 -o sweep.parquet \\
      --url http://127.0.0.1:8000 --label vllm
      a rate sweep, one stage per rate, into one file
  trace replay sharegpt=traces/sharegpt_sample.json --rate 4 --burstiness 0.5 -o bursty.parquet
  trace replay traces/sample.parquet --url http://127.0.0.1:8000 -o run.parquet
      the trace's recorded arrival times; add --rate R to retarget its mean rate, or
      --time-scale 2 to play it twice as slowly

The first Ctrl-C (or SIGTERM) stops sending and drains in-flight requests (--drain-timeout),
then closes a valid file; a second one aborts, leaving the flushed data readable in
OUT.parquet.partial/.
Exit status: 0 done, 130 stopped by Ctrl-C or SIGTERM (the file is still valid), 2 error.";

/// Synthetic arrival processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalArg {
    /// Exponential gaps (the default).
    Poisson,
    /// Gamma gaps with shape --burstiness.
    Gamma,
    /// Evenly spaced.
    Constant,
}

/// Routes and their protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndpointArg {
    /// /v1/chat/completions
    Chat,
    /// /v1/completions
    Completions,
    /// TGI's native /generate_stream
    Tgi,
    /// Triton's /v2/models/MODEL/generate_stream (TensorRT-LLM), body from --query-template
    Triton,
    /// SGLang's native /generate
    Sglang,
    /// Any JSON-over-SSE route: --path, --query-template, --text-field
    Custom,
    /// OpenAI Responses: /v1/responses
    Responses,
    /// Anthropic Messages: /v1/messages (the key goes as x-api-key)
    Messages,
}

/// How deadlines are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimerArg {
    /// A dedicated release thread: precise sleep, then a short spin (default).
    Thread,
    /// tokio's sleep_until (about 1 ms granularity).
    Tokio,
}

/// Arguments of `trace replay`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ReplayArgs {
    /// What to send: `random` (default), `sharegpt=FILE`, or a trace file (.parquet) whose
    /// requests and arrival times are re-issued.
    #[arg(value_name = "WORKLOAD", default_value = "random")]
    pub workload: String,

    /// Target server (OpenAI-compatible). Without it, the embedded simulator is started.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Requests per second; a comma list (`1,2,5,8`) runs one stage per rate into one file;
    /// `inf` sends all at once. For a trace, retargets its mean rate keeping its burst shape.
    #[arg(long, value_name = "RATES", value_delimiter = ',', value_parser = crate::parse::rate)]
    pub rate: Vec<f64>,

    /// Requests per stage (default: the whole trace, else 100).
    #[arg(short = 'n', long = "requests", value_name = "N", value_parser = crate::parse::positive_u64)]
    pub requests: Option<u64>,

    /// Instead of -n: each stage sends rate x DURATION requests (`60s`, `5m`), so every stage
    /// lasts as long; low-rate stages then hold enough time to judge saturation.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse::duration, conflicts_with = "requests")]
    pub stage_duration: Option<Duration>,

    /// Output file (default: a new runs/<label or sim>-<UTC time>.parquet).
    #[arg(short = 'o', long, value_name = "OUT.parquet")]
    pub output: Option<PathBuf>,

    /// Replace an existing trace at the output path (without it, an existing file is refused).
    #[arg(long)]
    pub force: bool,

    /// Engine label stored in the file (`vllm`, `sglang`...).
    #[arg(long)]
    pub label: Option<String>,

    /// Synthetic arrival process.
    #[arg(long, value_enum, default_value_t = ArrivalArg::Poisson)]
    pub arrival: ArrivalArg,

    /// Gamma shape K (implies --arrival gamma): 1 is Poisson, < 1 burstier, > 1 smoother.
    #[arg(long, value_name = "K", value_parser = crate::parse::positive_f64)]
    pub burstiness: Option<f64>,

    /// Multiplies a trace's timeline (2 = twice as slow), after any --rate retargeting.
    #[arg(long, value_name = "F", value_parser = crate::parse::positive_f64)]
    pub time_scale: Option<f64>,

    /// Seed of arrival times and synthetic prompts (stored in the file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Prompt length of `random`, in tokens.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub input_len: u32,

    /// Output length (max_tokens) of `random`, in tokens.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub output_len: u32,

    /// 1 for exact lengths; r < 1 samples each length in [r*len, len].
    #[arg(long, default_value_t = 1.0, value_parser = crate::parse::ratio)]
    pub range_ratio: f64,

    /// jsonl=FILE / json=FILE: where each record's prompt is, dotted (e.g. messages.0.content).
    /// Without it: `question` (open_qa.jsonl), `instruction` + `input` (LongAlpaca), `prompt`,
    /// `text`.
    #[arg(long, value_name = "FIELD")]
    pub prompt_field: Option<String>,

    /// jsonl=FILE / json=FILE: leave out prompts shorter than N tokens (by --tokenizer, else
    /// whitespace words).
    #[arg(long, value_name = "N")]
    pub min_prompt_length: Option<u32>,

    /// jsonl=FILE / json=FILE: leave out prompts longer than N tokens (by --tokenizer, else
    /// whitespace words).
    #[arg(long, value_name = "N")]
    pub max_prompt_length: Option<u32>,

    /// At most C requests in flight; later arrivals wait (the wait is recorded). Several values
    /// (`1,32,128`) sweep concurrency: one closed-loop stage per value (`conc=C`), every request
    /// released at once (`--rate inf`, the default then), -n requests each.
    #[arg(long, value_name = "C", value_delimiter = ',', value_parser = crate::parse::positive_usize)]
    pub max_concurrency: Vec<usize>,

    /// Warmup requests sent before the first stage, recorded under stage `warmup`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup: u64,

    /// Route.
    #[arg(long, value_enum, default_value_t = EndpointArg::Chat)]
    pub endpoint: EndpointArg,

    /// Request body for --endpoint triton or custom: JSON where %p is the prompt (JSON-escaped,
    /// so inside quotes) and %m the max tokens, e.g.
    /// '{"text_input": "%p", "max_tokens": %m, "stream": true, "end_id": 151643}'.
    #[arg(long, value_name = "JSON", value_parser = trace_client::QueryTemplate::parse)]
    pub query_template: Option<trace_client::QueryTemplate>,

    /// The route of --endpoint custom (e.g. /generate).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Where --endpoint custom's events hold their text delta, dotted (e.g. choices.0.text).
    #[arg(long, value_name = "FIELD")]
    pub text_field: Option<String>,

    /// Model name (default: the first one `/v1/models` lists).
    #[arg(long)]
    pub model: Option<String>,

    /// Bearer token (default: the OPENAI_API_KEY environment variable).
    #[arg(long)]
    pub api_key: Option<String>,

    /// Ask the server to ignore EOS, so every output has max_tokens tokens.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Per-request timeout.
    #[arg(long, default_value = "10m", value_parser = crate::parse::duration)]
    pub timeout: Duration,

    /// Hugging Face tokenizer.json: exact-length random prompts and output token counts.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// After Ctrl-C, how long in-flight requests may finish before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = crate::parse::duration_or_zero)]
    pub drain_timeout: Duration,

    /// Do not sample the server's /metrics.
    #[arg(long)]
    pub no_metrics: bool,

    /// Exit 1 when more than this fraction of the run's requests failed (0: any failure).
    #[arg(long, value_name = "FRACTION", value_parser = crate::parse::fraction)]
    pub max_failure_rate: Option<f64>,

    /// How often the server's /metrics queue gauges are sampled.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::parse::duration)]
    pub metrics_interval: Duration,

    /// Don't ask for usage on every chunk (`stream_options.continuous_usage_stats`): for servers
    /// that refuse unknown fields with HTTP 422 (`transformers serve`). Per-event token counts
    /// then assume one token per content event.
    #[arg(long)]
    pub no_continuous_usage: bool,

    /// Also store these texts in the trace (comma list).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub store: Vec<StoreArg>,

    /// How send deadlines are met.
    #[arg(long, value_enum, default_value_t = TimerArg::Thread, hide = true)]
    pub timer: TimerArg,

    /// GPU telemetry beside the run (memory, utilisation, power, SM clock, into the run file):
    /// `auto` samples this host's GPUs through NVML when the target is on this host, `nvml`
    /// always (a notice without a GPU), a DCGM exporter's URL (http://gpu-host:9400/metrics),
    /// or `off`.
    #[arg(long, value_name = "auto|nvml|URL|off", default_value = "auto")]
    pub gpu_metrics: String,

    /// Send this host's share of the run, k of n (0-based): arrivals (requests, or whole
    /// sessions) whose index in the one schedule every host computes is k modulo n. `trace merge`
    /// joins the n files into one run.
    #[arg(long, value_name = "K/N", value_parser = trace_replay::plan::Shard::parse)]
    pub shard: Option<trace_replay::plan::Shard>,

    /// Start together with the other shards: register with this coordinator (`trace
    /// coordinate`), measure this host's clock offset to it, and start at the time it releases.
    /// `self` (shard 0 only) runs the coordinator in this process, on --coordinator-listen.
    #[arg(long, value_name = "URL|self", requires = "shard")]
    pub coordinator: Option<String>,

    /// Send from N processes on this host, as N shards of one run that meet at an in-process
    /// start barrier and are merged into the output at the end: past one process's open-file
    /// limit (each stream holds a socket) and its cores. Needs --url.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256),
          conflicts_with_all = ["shard", "coordinator"])]
    pub processes: u32,

    /// Where `--coordinator self` listens for the other shards.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9777")]
    pub coordinator_listen: std::net::SocketAddr,

    /// How long to wait at the coordinator's barrier for the other shards.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::parse::duration)]
    pub barrier_timeout: Duration,

    /// Put before the live progress line (set by `trace suite run`: the scenario, k of n, the
    /// campaign's time left).
    #[arg(long, value_name = "TEXT", hide = true)]
    pub progress_prefix: Option<String>,

    /// The campaign this run belongs to, as JSON (set by `trace suite run`).
    #[arg(long, value_name = "JSON", hide = true)]
    pub campaign: Option<String>,

    /// TLS, headers and HTTP version.
    #[command(flatten)]
    pub transport: super::transport::TransportArgs,

    /// Sessions of a trace workload (rows with session_id or parent_id).
    #[command(flatten)]
    pub sessions: SessionArgs,
}

/// Where a session turn's history comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryArg {
    /// The recorded prompts and replies (or hash_ids blocks).
    Recorded,
    /// The previous messages plus the reply the engine streamed in this run.
    Live,
}

/// Which turns of a ShareGPT conversation are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SharegptTurnsArg {
    /// Every turn: each conversation a session, its history resent.
    All,
    /// The first human turn alone, as vLLM's benchmark sends it.
    First,
}

/// What a failed turn does to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TurnErrorArg {
    /// The session ends; its remaining turns are rows with error_kind dropped.
    End,
    /// The session goes on.
    Continue,
}

/// How a trace's sessions are replayed: turn k+1 is sent when turn k ended plus its think time.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionArgs {
    /// Where each turn's history comes from.
    #[arg(long, value_enum, default_value_t = HistoryArg::Recorded)]
    pub history: HistoryArg,

    /// What a failed turn does to its session.
    #[arg(long, value_enum, default_value_t = TurnErrorArg::End)]
    pub on_turn_error: TurnErrorArg,

    /// At most N sessions at once; later sessions wait (the wait is recorded as send lag).
    #[arg(long, value_name = "N", value_parser = crate::parse::positive_usize)]
    pub max_sessions: Option<usize>,

    /// Multiplies every think time (after --rate or --time-scale stretched the timeline).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub think_scale: f64,

    /// Leave out rows with bad session links (a missing parent, a cycle, a turn before its
    /// parent) and their descendants, counted, instead of refusing the workload.
    #[arg(long)]
    pub skip_bad: bool,

    /// Replay every row as an independent request at its recorded time, ignoring sessions.
    #[arg(long)]
    pub no_sessions: bool,

    /// A sharegpt=FILE workload: every turn of each conversation, or the first alone.
    #[arg(long, value_enum, default_value_t = SharegptTurnsArg::All)]
    pub sharegpt_turns: SharegptTurnsArg,
}

impl SessionArgs {
    /// The library's options.
    pub fn to_options(&self) -> trace_replay::session::SessionOptions {
        use trace_replay::session::{History, OnTurnError, SessionOptions};
        SessionOptions {
            enabled: !self.no_sessions,
            history: match self.history {
                HistoryArg::Recorded => History::Recorded,
                HistoryArg::Live => History::Live,
            },
            on_turn_error: match self.on_turn_error {
                TurnErrorArg::End => OnTurnError::End,
                TurnErrorArg::Continue => OnTurnError::Continue,
            },
            max_sessions: self.max_sessions,
            think_scale: self.think_scale,
            skip_bad: self.skip_bad,
            sharegpt_first_turn: self.sharegpt_turns == SharegptTurnsArg::First,
        }
    }
}

impl ReplayArgs {
    /// Converts to the library's validated configuration, for the target at `url`, writing
    /// `output`.
    pub fn to_config(&self, url: String, output: PathBuf) -> anyhow::Result<ReplayConfig> {
        let random = RandomSpec {
            input_len: self.input_len,
            output_len: self.output_len,
            range_ratio: self.range_ratio,
        };
        let mut workload = WorkloadSpec::parse(&self.workload, random)?;
        match &mut workload {
            WorkloadSpec::Dataset(d) => {
                d.field = self.prompt_field.clone();
                d.min_tokens = self.min_prompt_length;
                d.max_tokens = self.max_prompt_length;
                d.tokenizer = self.tokenizer.clone();
                if let (Some(lo), Some(hi)) = (d.min_tokens, d.max_tokens)
                    && lo > hi
                {
                    anyhow::bail!(
                        "--min-prompt-length {lo} is above --max-prompt-length {hi}: no prompt \
                         can pass"
                    );
                }
            }
            _ if self.prompt_field.is_some()
                || self.min_prompt_length.is_some()
                || self.max_prompt_length.is_some() =>
            {
                anyhow::bail!(
                    "--prompt-field, --min-prompt-length and --max-prompt-length apply to a \
                     jsonl=FILE or json=FILE workload"
                );
            }
            _ => {}
        }
        let arrival = match (self.arrival, self.burstiness) {
            (ArrivalArg::Constant, Some(_)) => {
                anyhow::bail!("--burstiness needs --arrival gamma or poisson, not constant")
            }
            (_, Some(k)) => Arrival::Gamma { burstiness: k },
            (ArrivalArg::Gamma, None) => Arrival::Gamma { burstiness: 1.0 },
            (ArrivalArg::Poisson, None) => Arrival::Poisson,
            (ArrivalArg::Constant, None) => Arrival::Constant,
        };
        let mut client = ClientConfig::new(url, "");
        client.model = self.model.clone();
        client.endpoint = match self.endpoint {
            EndpointArg::Chat => Endpoint::Chat,
            EndpointArg::Completions => Endpoint::Completions,
            EndpointArg::Tgi => Endpoint::Tgi,
            EndpointArg::Triton => Endpoint::Triton,
            EndpointArg::Sglang => Endpoint::Sglang,
            EndpointArg::Custom => Endpoint::Custom,
            EndpointArg::Responses => Endpoint::Responses,
            EndpointArg::Messages => Endpoint::Messages,
        };
        let custom = client.endpoint == Endpoint::Custom;
        if custom && (self.path.is_none() || self.query_template.is_none()) {
            anyhow::bail!("--endpoint custom needs --path and --query-template");
        }
        if !custom && (self.path.is_some() || self.text_field.is_some()) {
            anyhow::bail!("--path and --text-field apply to --endpoint custom");
        }
        if self.query_template.is_some()
            && !matches!(client.endpoint, Endpoint::Triton | Endpoint::Custom)
        {
            anyhow::bail!("--query-template applies to --endpoint triton or custom");
        }
        if client.endpoint == Endpoint::Triton && self.model.is_none() {
            anyhow::bail!(
                "--endpoint triton needs --model (it names the route: /v2/models/MODEL/generate_stream)"
            );
        }
        client.query_template = self.query_template.clone();
        client.custom_path = self.path.clone();
        client.text_field = self.text_field.clone();
        client.api_key = self
            .api_key
            .clone()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok());
        client.timeout = self.timeout;
        client.ignore_eos = self.ignore_eos;
        client.continuous_usage = !self.no_continuous_usage;
        client.store_prompt = self.store.contains(&StoreArg::Prompts);
        client.store_output = self.store.contains(&StoreArg::Outputs);
        client.tokenizer = self.tokenizer.clone();
        client.transport = self.transport.to_transport()?;
        let cfg = ReplayConfig {
            client,
            workload,
            rates: self.rate.clone(),
            arrival,
            time_scale: self.time_scale,
            requests: self.requests,
            stage_duration: self.stage_duration,
            warmup: self.warmup,
            max_concurrency: match self.max_concurrency.as_slice() {
                [c] => Some(*c),
                _ => None,
            },
            concurrencies: if self.max_concurrency.len() > 1 {
                self.max_concurrency.clone()
            } else {
                Vec::new()
            },
            fds_per_request: 1,
            seed: self.seed,
            output,
            force: self.force,
            label: self.label.clone(),
            drain_timeout: self.drain_timeout,
            timer: match self.timer {
                TimerArg::Thread => Timer::Thread,
                TimerArg::Tokio => Timer::Tokio,
            },
            scrape_metrics: !self.no_metrics,
            metrics_interval: self.metrics_interval,
            sessions: self.sessions.to_options(),
            campaign: self.campaign.clone(),
            gpu_metrics: match self.gpu_metrics.as_str() {
                "auto" => trace_replay::GpuTelemetry::Auto,
                "off" => trace_replay::GpuTelemetry::Off,
                "nvml" => trace_replay::GpuTelemetry::Nvml,
                url if url.starts_with("http://") || url.starts_with("https://") => {
                    trace_replay::GpuTelemetry::Dcgm(url.to_string())
                }
                other => anyhow::bail!(
                    "invalid --gpu-metrics '{other}': give auto, nvml, off or a DCGM exporter's \
                     http(s):// URL"
                ),
            },
            shard: self.shard,
            coordinator: self.coordinator.clone(),
            barrier_timeout: self.barrier_timeout,
        };
        cfg.validate()?;
        let inputs: Vec<&std::path::Path> = cfg
            .workload
            .input_path()
            .into_iter()
            .chain(self.tokenizer.as_deref())
            .collect();
        super::not_an_input(&cfg.output, &inputs)?;
        Ok(cfg)
    }
}

/// `runs/<label>-<UTC time>.parquet`, the label made safe for a file name.
fn default_output(label: &str) -> PathBuf {
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    PathBuf::from(RUNS_DIR).join(format!("{safe}-{ts}.parquet"))
}

/// `trace replay --processes N`: this command line again as N child processes, shard k of N
/// each (shard 0 holding the start barrier on a free loopback port), their files and logs in
/// `OUTPUT.shards/`, then merged into the output; the shard folder is kept when a child or the
/// merge fails.
fn run_processes(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let n = args.processes;
    // The children rerun this process's own command line.
    anyhow::ensure!(
        std::env::args().nth(1).as_deref() == Some("replay"),
        "--processes works on a `trace replay` command line (not inside a suite scenario)"
    );
    anyhow::ensure!(
        args.url.is_some(),
        "--processes needs --url: the embedded simulator is one process's, and N processes \
         would start N of them"
    );
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(args.label.as_deref().unwrap_or("run")));
    if output.exists() && !args.force {
        anyhow::bail!("{} exists: pass --force to replace it", output.display());
    }
    let mut dir = output.as_os_str().to_owned();
    dir.push(".shards");
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe().context("finding the trace binary")?;
    let base = child_argv(std::env::args().skip(1));
    let mut children = Vec::new();
    for k in 0..n {
        let file = dir.join(format!("shard-{k}.parquet"));
        let log = dir.join(format!("shard-{k}.log"));
        let coord = if k == 0 {
            "self".to_string()
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let mut c = std::process::Command::new(&exe);
        c.args(&base)
            .args(["--shard", &format!("{k}/{n}"), "--coordinator", &coord])
            .args(["--coordinator-listen", &format!("127.0.0.1:{port}")])
            .arg("-o")
            .arg(&file)
            .arg("--force")
            .stdin(std::process::Stdio::null());
        let f =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        c.stdout(f.try_clone()?).stderr(f);
        children.push((k, log, c.spawn().context("starting a replay process")?));
    }
    eprintln!(
        "replay: {n} processes sending shards of one run (logs in {})",
        dir.display()
    );
    let mut failed = Vec::new();
    for (k, log, mut child) in children {
        let status = child.wait()?;
        if !status.success() {
            failed.push(format!("shard {k} ({status}, log {})", log.display()));
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} failed; the shards are kept in {}",
        failed.join(", "),
        dir.display()
    );
    let shards: Vec<PathBuf> = (0..n)
        .map(|k| dir.join(format!("shard-{k}.parquet")))
        .collect();
    let m = super::merge::merge(&shards, &output, args.force)
        .with_context(|| format!("merging the shards in {}", dir.display()))?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!(
        "wrote {} ({} rows from {n} processes, their starts {:.3} ms apart)",
        crate::store::shown(&output),
        m.rows,
        m.spread_ns as f64 / 1e6
    );
    eprintln!("read more: trace report {}", crate::store::shown(&output));
    Ok(ExitCode::SUCCESS)
}

/// The replay's own arguments, for a child: without `--processes`, the output and `--force`,
/// which the parent sets per child.
fn child_argv(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        match a.as_str() {
            "--processes" | "-o" | "--output" => skip_next = true,
            "--force" => {}
            _ if a.starts_with("--processes=") || a.starts_with("--output=") => {}
            _ if a.starts_with("-o") && a.len() > 2 && !a.starts_with("-o=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Runs `trace replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.processes > 1 {
        return run_processes(&args);
    }
    // Settings are checked before anything starts, so a bad flag never starts a simulator.
    args.to_config("http://127.0.0.1:1".into(), PathBuf::from("check.parquet"))?;
    args.transport.warn();
    let sim = match &args.url {
        Some(_) => None,
        None => Some(crate::embedded::start()?),
    };
    let url = args
        .url
        .clone()
        .or_else(|| sim.as_ref().map(|s| s.url()))
        .unwrap_or_default();
    let label = args
        .label
        .clone()
        .or_else(|| sim.is_some().then(|| "sim".to_string()));
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(label.as_deref().unwrap_or("run")));
    let mut cfg = args.to_config(url, output.clone())?;
    cfg.label = label;
    if sim.is_some() {
        // The simulator's end of every connection lives in this process too.
        cfg.fds_per_request = 2;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    // `--coordinator self`: shard 0 holds the barrier for every shard, itself included.
    let mut cfg = cfg;
    let own_barrier = match (cfg.coordinator.as_deref(), cfg.shard) {
        (Some("self"), Some(sh)) => {
            anyhow::ensure!(
                sh.index == 0,
                "--coordinator self runs on shard 0; shard {}/{} gives shard 0's URL",
                sh.index,
                sh.count
            );
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(args.coordinator_listen))
                .with_context(|| format!("cannot listen on {}", args.coordinator_listen))?;
            let port = listener.local_addr()?.port();
            eprintln!(
                "coordinator for {} shard(s) on port {port} (--coordinator-listen {})",
                sh.count, args.coordinator_listen
            );
            cfg.coordinator = Some(format!("http://127.0.0.1:{port}"));
            Some(rt.spawn(super::coordinate::serve(
                listener,
                sh.count,
                cfg.barrier_timeout,
                Duration::from_secs(2),
            )))
        }
        _ => None,
    };
    let prefix = args.progress_prefix.clone();
    let summary = rt.block_on(async {
        let interrupted = crate::signal::on_stop(
            stop.clone(),
            "stopping: no new requests; draining in-flight ones (Ctrl-C again to abort)",
            format!(
                "aborted; the data flushed so far is readable in {}.partial",
                output.display()
            ),
        );
        let line = crate::progress::ProgressLine::start(counters.clone(), prefix);
        let r = trace_replay::run(cfg, counters.clone(), stop.clone()).await;
        line.finish();
        if let Some(b) = own_barrier {
            b.abort();
        }
        r.map(|s| (s, interrupted.exit_code()))
    });
    // Background tasks (the signal listener, idle connections) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Some(sim) = sim {
        crate::embedded::stop(sim);
    }
    let (summary, interrupted) = summary?;

    eprintln!(
        "wrote {} ({} rows, target {}, model {}, {} server samples, at most {} in flight)",
        crate::store::shown(&summary.output),
        summary.rows,
        summary.url,
        summary.model,
        summary.server_samples,
        summary.max_in_flight
    );
    if let Some(n) = summary.sessions {
        eprintln!(
            "replayed as {n} session(s), closed-loop within each (--history {})",
            args.sessions
                .history
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        );
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    for s in &summary.stages {
        if s.prompts_off > 0 {
            eprintln!(
                "WARNING: stage {}: the server counted {} of {} prompts more than 5% away from \
                 the workload's length (prompt lengths made by: {}); run `trace report {}` for \
                 the numbers",
                s.stage,
                s.prompts_off,
                s.prompts_checked,
                summary.prompt_lengths.as_str(),
                crate::store::shown(&summary.output)
            );
        }
        if s.short_outputs > 0 {
            eprintln!(
                "warning: stage {}: {} of {} outputs came back shorter than max_tokens (early EOS); \
                 output throughput is not comparable to a run that generated every token \
                 (try --ignore-eos)",
                s.stage, s.short_outputs, s.ok
            );
        }
    }
    print!("{}", crate::table::render(&summary.stages));
    let failed: u64 = summary.stages.iter().map(|s| s.failed).sum();
    let total: u64 = failed + summary.stages.iter().map(|s| s.ok).sum::<u64>();
    if failed > 0 {
        let first = summary.stages.iter().find_map(|s| s.first_error.as_deref());
        eprintln!(
            "{}: {failed} of {total} requests failed{}",
            if failed == total { "ERROR" } else { "warning" },
            first.map_or(String::new(), |e| format!(
                "; the first: {}",
                trace_format::printable(e)
            ))
        );
    }
    #[cfg(feature = "analyze")]
    print_verdicts(&summary.output);
    eprintln!(
        "read more: trace report {}",
        crate::store::shown(&summary.output)
    );
    if let Some(code) = interrupted {
        eprintln!("stopped by a signal; the file holds what was sent");
        return Ok(code);
    }
    if let Some(max) = args.max_failure_rate
        && total > 0
        && failed as f64 > max * total as f64
    {
        eprintln!(
            "failure rate {:.1}% is above --max-failure-rate {:.1}%",
            100.0 * failed as f64 / total as f64,
            100.0 * max
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The saturation verdict of each stage and of the run, from the file just written (the same
/// analysis as `trace report`), so a saturated or failing run never looks healthy here.
#[cfg(feature = "analyze")]
fn print_verdicts(path: &std::path::Path) {
    use trace_analyze::report::{self, ReportOptions};
    use trace_analyze::{LoadOptions, load_run};
    let rep = match load_run(path, LoadOptions::default()) {
        Ok(mut data) => report::build(&mut data, &ReportOptions::default()),
        Err(e) => {
            eprintln!("warning: cannot analyse {}: {e:#}", path.display());
            return;
        }
    };
    for s in &rep.stages {
        eprintln!(
            "stage {}: {}: {}",
            trace_format::printable(&s.stage),
            s.saturation.verdict.as_str(),
            s.saturation.reason
        );
    }
    if rep.stages.len() > 1 {
        eprintln!("run: {}", rep.saturation.summary);
    }
}
