//! The replay entry point: [`ReplayConfig`] (validated, no clap types) and [`run`], which starts
//! the target (the embedded simulator when no URL is given), plans the stages, dispatches them
//! through trace-client, records every row with the trace-format writer, samples the server's
//! `/metrics` every second, and returns the per-stage [`Summary`].
//!
//! Warmup: `--warmup N` sends copies of the first N workload items before the first stage, at
//! its rate, recorded under stage `warmup` with ids `warmup-<id>` (data is never thrown away;
//! `trace report` leaves the `warmup` stage out). They are not in the summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use trace_client::{Client, ClientConfig, Endpoint, MetricsScraper, Prompt, RequestSpec};
use trace_format::{ServerSample, StageInfo, TraceMeta, TraceRecord, WriterOptions, meta};

use crate::Error;
use crate::dispatch::{
    Counters, Dispatcher, RequestSender, SendFuture, Sink, StagePlan, Stop, Timer,
};
use crate::schedule::{self, Arrival};
use crate::summary::StageSummary;
use crate::workload::{WorkItem, Workload, WorkloadSpec};

/// Requests per stage when `-n` is not given and the workload is synthetic.
pub const DEFAULT_REQUESTS: u64 = 100;

/// A validated replay configuration.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Target base URL; None starts the embedded simulator on 127.0.0.1.
    pub url: Option<String>,
    /// What to send.
    pub workload: WorkloadSpec,
    /// One stage per rate (req/s, `inf` allowed). Empty: a trace's recorded timing.
    pub rates: Vec<f64>,
    /// Synthetic arrival process.
    pub arrival: Arrival,
    /// Multiplies a trace's timeline (after any retargeting).
    pub time_scale: Option<f64>,
    /// Requests per stage; None: the whole trace, or [`DEFAULT_REQUESTS`].
    pub requests: Option<u64>,
    /// Instead of `requests`: each stage sends rate x this many seconds of arrivals, so every
    /// stage lasts as long and low-rate stages are not cut short.
    pub stage_duration: Option<Duration>,
    /// Warmup requests before the first stage.
    pub warmup: u64,
    /// Concurrency cap.
    pub max_concurrency: Option<usize>,
    /// Seed of schedules and synthetic prompts.
    pub seed: u64,
    /// Output file; None: `runs/<label or sim>-<UTC timestamp>.parquet`.
    pub output: Option<PathBuf>,
    /// Folder for outputs without `output`.
    pub runs_dir: PathBuf,
    /// Engine label.
    pub label: Option<String>,
    /// Model; None asks `/v1/models`.
    pub model: Option<String>,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Route.
    pub endpoint: Endpoint,
    /// Send `ignore_eos`.
    pub ignore_eos: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Hugging Face tokenizer.json (exact-length random prompts, output token counting).
    pub tokenizer: Option<PathBuf>,
    /// After a stop, how long in-flight requests may finish.
    pub drain_timeout: Duration,
    /// How deadlines are met.
    pub timer: Timer,
    /// Sample the target's `/metrics` every second.
    pub scrape_metrics: bool,
    /// Store prompt texts in the trace.
    pub store_prompts: bool,
    /// Store output texts in the trace.
    pub store_outputs: bool,
    /// Ask for usage on every chunk (`stream_options.continuous_usage_stats`); off for servers
    /// that refuse unknown fields.
    pub continuous_usage: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            url: None,
            workload: WorkloadSpec::Random(Default::default()),
            rates: Vec::new(),
            arrival: Arrival::Poisson,
            time_scale: None,
            requests: None,
            stage_duration: None,
            warmup: 0,
            max_concurrency: None,
            seed: 0,
            output: None,
            runs_dir: PathBuf::from("runs"),
            label: None,
            model: None,
            api_key: None,
            endpoint: Endpoint::Chat,
            ignore_eos: false,
            timeout: Duration::from_secs(600),
            tokenizer: None,
            drain_timeout: Duration::from_secs(30),
            timer: Timer::Thread,
            scrape_metrics: true,
            store_prompts: false,
            store_outputs: false,
            continuous_usage: true,
        }
    }
}

impl ReplayConfig {
    /// Checks the settings that do not need the workload loaded.
    pub fn validate(&self) -> Result<(), Error> {
        for &r in &self.rates {
            if r.is_nan() || r <= 0.0 {
                return Err(Error::Config(format!(
                    "invalid rate '{r}': must be a number > 0 or inf"
                )));
            }
        }
        if let Some(f) = self.time_scale
            && !(f.is_finite() && f > 0.0)
        {
            return Err(Error::Config(format!(
                "invalid time scale '{f}': must be a number > 0"
            )));
        }
        if let Some(d) = self.stage_duration {
            if self.requests.is_some() {
                return Err(Error::Config(
                    "give either --requests or --stage-duration, not both".into(),
                ));
            }
            if d.is_zero() {
                return Err(Error::Config(
                    "invalid stage duration '0s': must be > 0".into(),
                ));
            }
            if self.rates.is_empty() || self.rates.iter().any(|r| r.is_infinite()) {
                return Err(Error::Config(
                    "--stage-duration needs finite --rate values (requests per stage = rate x duration)"
                        .into(),
                ));
            }
        }
        if self.requests == Some(0) {
            return Err(Error::Config(
                "invalid request count '0': must be >= 1".into(),
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(Error::Config(
                "invalid max concurrency '0': must be >= 1".into(),
            ));
        }
        if let Arrival::Gamma { burstiness } = self.arrival
            && !(burstiness.is_finite() && burstiness > 0.0)
        {
            return Err(Error::Config(format!(
                "invalid burstiness '{burstiness}': must be a finite number > 0"
            )));
        }
        if self.rates.is_empty() && !matches!(self.workload, WorkloadSpec::Trace(_)) {
            return Err(Error::Config(
                "no --rate: only a trace workload has recorded timing to replay; give --rate R"
                    .into(),
            ));
        }
        if self.time_scale.is_some() && !matches!(self.workload, WorkloadSpec::Trace(_)) {
            return Err(Error::Config(
                "--time-scale applies only to a trace workload".into(),
            ));
        }
        Ok(())
    }
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The file written.
    pub output: PathBuf,
    /// The target URL.
    pub url: String,
    /// The model used.
    pub model: String,
    /// One line per measured stage (warmup excluded).
    pub stages: Vec<StageSummary>,
    /// `/metrics` samples stored.
    pub server_samples: usize,
    /// Most requests in flight at once.
    pub max_in_flight: i64,
    /// The run was stopped before its end (Ctrl-C).
    pub interrupted: bool,
    /// Rows written.
    pub rows: u64,
}

/// The stage label of a rate: `rate=5`, `rate=0.5`, `rate=inf`.
pub fn stage_label(rate: f64) -> String {
    if rate.is_infinite() {
        "rate=inf".into()
    } else {
        format!("rate={rate}")
    }
}

/// Sends through trace-client.
struct ClientSender {
    client: Client,
}

impl RequestSender for ClientSender {
    fn send<'a>(
        &'a self,
        item: &'a WorkItem,
        run_start: Instant,
        rec: &'a mut TraceRecord,
        cancel: SendFuture<'a>,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let spec = RequestSpec {
                request_id: item.request_id.clone(),
                prompt: Prompt::Text(item.prompt.clone()),
                prompt_tokens: i32::try_from(item.prompt_tokens).ok(),
                max_tokens: item.max_tokens.and_then(|m| i32::try_from(m).ok()),
            };
            self.client
                .send_cancellable(&spec, run_start, rec, cancel)
                .await;
        })
    }
}

/// Raises the soft open-file limit to the hard limit, so thousands of streams can be open.
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current == cur.maximum {
        return cur.current;
    }
    let new = Rlimit {
        current: cur.maximum,
        maximum: cur.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => cur.maximum,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            cur.current
        }
    }
}

fn default_output(runs_dir: &Path, label: Option<&str>, embedded: bool) -> PathBuf {
    let name = label.unwrap_or(if embedded { "sim" } else { "run" });
    let safe: String = name
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
    runs_dir.join(format!("{safe}-{ts}.parquet"))
}

fn metrics_url(base: &str) -> String {
    let b = base.trim().trim_end_matches('/');
    let b = b.strip_suffix("/v1").unwrap_or(b);
    format!("{b}/metrics")
}

/// Plans the measured stages (and the warmup stage first, if any).
fn plan_stages(cfg: &ReplayConfig, workload: &Workload) -> Result<Vec<StagePlan>, Error> {
    let n = match (cfg.requests, workload.len()) {
        (Some(n), _) => n,
        (None, Some(len)) => len as u64,
        (None, None) => DEFAULT_REQUESTS,
    };
    let n_usize =
        usize::try_from(n).map_err(|_| Error::Config(format!("too many requests: {n}")))?;
    let offsets_for = |rate: Option<f64>, count: usize| -> Result<Vec<i64>, Error> {
        match (workload.timeline_ns(), rate) {
            (Some(tl), rate) => {
                // Cycle the recorded timeline when more requests than rows are asked for.
                let span = tl.last().copied().unwrap_or(0);
                let gap = if tl.len() > 1 {
                    span / (tl.len() as i64 - 1)
                } else {
                    0
                };
                let base: Vec<i64> = (0..count)
                    .map(|i| tl[i % tl.len()] + (i / tl.len()) as i64 * (span + gap))
                    .collect();
                let t = match rate {
                    Some(r) => schedule::retarget(&base, r)?,
                    None => base,
                };
                match cfg.time_scale {
                    Some(f) => schedule::time_scale(&t, f),
                    None => Ok(t),
                }
            }
            (None, Some(r)) => cfg.arrival.offsets_ns(r, count, cfg.seed),
            (None, None) => Err(Error::Config("no --rate for a synthetic workload".into())),
        }
    };
    let rates: Vec<Option<f64>> = if cfg.rates.is_empty() {
        vec![None]
    } else {
        cfg.rates.iter().map(|&r| Some(r)).collect()
    };
    let mut plans = Vec::new();
    if cfg.warmup > 0 {
        let w = usize::try_from(cfg.warmup)
            .map_err(|_| Error::Config(format!("too many warmup requests: {}", cfg.warmup)))?;
        plans.push(StagePlan {
            label: "warmup".into(),
            target_rate: rates[0],
            offsets_ns: offsets_for(rates[0], w)?,
            first_item: 0,
        });
    }
    let mut first_item = 0u64;
    for rate in &rates {
        let count = match (cfg.stage_duration, rate) {
            (Some(d), Some(r)) => ((r * d.as_secs_f64()).round() as usize).max(1),
            _ => n_usize,
        };
        plans.push(StagePlan {
            label: rate.map_or_else(|| "recorded".to_string(), stage_label),
            target_rate: *rate,
            offsets_ns: offsets_for(*rate, count)?,
            first_item,
        });
        first_item += count as u64;
    }
    Ok(plans)
}

/// The embedded target, stopped when dropped or at the end of the run.
struct Target {
    url: String,
    sim: Option<trace_sim::SimHandle>,
}

fn start_target(cfg: &ReplayConfig) -> Result<Target, Error> {
    if let Some(u) = &cfg.url {
        return Ok(Target {
            url: u.clone(),
            sim: None,
        });
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let sim = trace_sim::spawn(trace_sim::SimConfig::default(), addr)
        .map_err(|e| Error::Target(format!("cannot start the embedded simulator: {e}")))?;
    Ok(Target {
        url: sim.url(),
        sim: Some(sim),
    })
}

/// Runs a replay to its end (or until `stop` and the drain), writing one trace file.
pub async fn run(cfg: ReplayConfig, counters: Arc<Counters>, stop: Stop) -> Result<Summary, Error> {
    cfg.validate()?;
    raise_nofile_limit();
    let mut workload = Workload::load(&cfg.workload, cfg.seed)?;
    if let Some(p) = &cfg.tokenizer {
        let tok = trace_client::HfTokenizer::load(p).map_err(|e| Error::Config(e.to_string()))?;
        workload.set_tokenizer(Arc::new(tok));
    }
    let workload = Arc::new(workload);
    let plans = plan_stages(&cfg, &workload)?;

    let mut target = start_target(&cfg)?;
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => {
            trace_client::list_models(&target.url, cfg.api_key.as_deref(), Duration::from_secs(10))
                .await
                .map_err(|e| Error::Target(format!("{e} (give --model to skip asking)")))?
                .swap_remove(0)
        }
    };
    let mut ccfg = ClientConfig::new(target.url.clone(), model.clone());
    ccfg.endpoint = cfg.endpoint;
    ccfg.api_key = cfg.api_key.clone();
    ccfg.timeout = cfg.timeout;
    ccfg.ignore_eos = cfg.ignore_eos;
    ccfg.tokenizer = cfg.tokenizer.clone();
    ccfg.store_prompt = cfg.store_prompts;
    ccfg.store_output = cfg.store_outputs;
    ccfg.continuous_usage = cfg.continuous_usage;
    let client = Client::new(ccfg).map_err(|e| Error::Target(e.to_string()))?;

    let output = cfg.output.clone().unwrap_or_else(|| {
        default_output(&cfg.runs_dir, cfg.label.as_deref(), target.sim.is_some())
    });
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }

    // The one wall-clock reading of the run, paired tightly with the monotonic anchor.
    let (anchor, unix_ns) = trace_sim::wall_anchor();
    let run_start = Instant::from_std(anchor);
    let mut m = TraceMeta::new();
    m.set(meta::RUN_START_UNIX_NS, unix_ns.to_string());
    m.set(meta::URL, target.url.clone());
    if let Some(l) = &cfg.label {
        m.set(meta::LABEL, l.clone());
    } else if target.sim.is_some() {
        m.set(meta::LABEL, "sim");
    }
    m.set(meta::WORKLOAD, workload.spec_json().to_string());
    m.set(meta::SEED, cfg.seed.to_string());
    m.set(
        meta::SCHEDULE,
        serde_json::json!({
            "arrival": if workload.timeline_ns().is_some() { serde_json::json!({"kind": "recorded"}) }
                       else { serde_json::to_value(cfg.arrival).unwrap_or_default() },
            "rates": cfg.rates.iter().map(|r| if r.is_infinite() { serde_json::json!("inf") } else { serde_json::json!(r) }).collect::<Vec<_>>(),
            "time_scale": cfg.time_scale,
            // Under --stage-duration each stage has its own count (in trace.stages).
            "requests_per_stage": cfg.stage_duration.is_none().then(|| plans.last().map(|p| p.offsets_ns.len())).flatten(),
            "stage_duration_s": cfg.stage_duration.map(|d| d.as_secs_f64()),
            "warmup": cfg.warmup,
            "max_concurrency": cfg.max_concurrency,
            "seed": cfg.seed,
            "rescaled_to_exact_rate": workload.timeline_ns().is_none()
                && !matches!(cfg.arrival, Arrival::Constant),
            "timer": format!("{:?}", cfg.timer).to_lowercase(),
        })
        .to_string(),
    );
    m.set(
        meta::CLIENT,
        serde_json::json!({
            "endpoint": cfg.endpoint.as_str(), "model": model, "timeout_s": cfg.timeout.as_secs_f64(),
            "ignore_eos": cfg.ignore_eos,
            "tokenizer": cfg.tokenizer.as_ref().map(|p| p.display().to_string()),
        })
        .to_string(),
    );
    let (tx, writer) = trace_format::spawn_writer(&output, m, WriterOptions::default())?;

    let (scrape_stop_tx, scrape_stop_rx) = tokio::sync::watch::channel(false);
    let scraper = cfg.scrape_metrics.then(|| {
        tokio::spawn(sample_metrics(
            metrics_url(&target.url),
            run_start,
            scrape_stop_rx,
        ))
    });

    let d = Dispatcher {
        sender: Arc::new(ClientSender { client }),
        sink: Sink::Parquet(tx),
        max_concurrency: cfg.max_concurrency,
        timer: cfg.timer,
        counters: counters.clone(),
        stop: stop.clone(),
        drain_timeout: cfg.drain_timeout,
    };
    let mut infos = Vec::new();
    let mut summaries = Vec::new();
    for plan in &plans {
        if stop.is_stopped() {
            break;
        }
        let wl = if plan.label == "warmup" {
            Arc::new(workload.with_id_prefix("warmup-"))
        } else {
            workload.clone()
        };
        let out = d.run_stage(run_start, plan, wl).await;
        infos.push(StageInfo {
            stage: out.label.clone(),
            target_rate: out.target_rate,
            start_ns: out.start_ns,
            end_ns: Some(out.end_ns),
            requests: out.released,
        });
        writer.set_meta(
            meta::STAGES,
            serde_json::to_string(&infos).unwrap_or_default(),
        );
        if out.label != "warmup" {
            summaries.push(out.stats.summary(&out.label, out.target_rate));
        }
    }
    drop(d);

    let _ = scrape_stop_tx.send(true);
    let mut n_samples = 0;
    if let Some(h) = scraper
        && let Ok((samples, engine)) = h.await
        && !samples.is_empty()
    {
        n_samples = samples.len();
        writer.set_meta(
            meta::SERVER_SAMPLES,
            serde_json::to_string(&samples).unwrap_or_default(),
        );
        if let Some(e) = engine {
            writer.set_meta(meta::SERVER_ENGINE, e);
        }
    }
    let stats = writer.close()?;
    if let Some(sim) = target.sim.take()
        && let Err(e) = sim.shutdown()
    {
        tracing::warn!("embedded simulator: {e}");
    }
    Ok(Summary {
        output,
        url: target.url,
        model,
        stages: summaries,
        server_samples: n_samples,
        max_in_flight: counters
            .max_in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        interrupted: stop.is_stopped(),
        rows: stats.rows,
    })
}

/// Scrapes `/metrics` every second until told to stop. A 404 (no metrics) ends sampling quietly.
async fn sample_metrics(
    url: String,
    run_start: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<ServerSample>, Option<String>) {
    let mut out = Vec::new();
    let mut engine = None;
    let Ok(scraper) = MetricsScraper::new(&url, Duration::from_secs(2)) else {
        return (out, engine);
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A slow scrape must not be followed by a burst of catch-up scrapes.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        match scraper.scrape(run_start).await {
            Ok(q) => {
                if q.waiting.is_none() && q.running.is_none() && q.kv_usage.is_none() {
                    // A /metrics without any known queue gauge: not an inference engine's.
                    continue;
                }
                if engine.is_none() && !q.engine.is_empty() {
                    engine = Some(q.engine.clone());
                }
                out.push(ServerSample {
                    t_ns: q.t_ns,
                    waiting: q.waiting,
                    running: q.running,
                    kv_usage: q.kv_usage,
                    preemptions: q.preemptions,
                });
            }
            Err(trace_client::Error::NoMetrics { .. }) => break,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::info!("metrics scrape failed: {e}");
                }
                if failures >= 5 && out.is_empty() {
                    break;
                }
            }
        }
    }
    (out, engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::RandomSpec;

    #[test]
    fn labels_and_urls() {
        assert_eq!(stage_label(5.0), "rate=5");
        assert_eq!(stage_label(0.5), "rate=0.5");
        assert_eq!(stage_label(f64::INFINITY), "rate=inf");
        assert_eq!(metrics_url("http://h:8000/v1/"), "http://h:8000/metrics");
        assert_eq!(metrics_url("http://h:8000"), "http://h:8000/metrics");
        let p = default_output(Path::new("runs"), Some("my vllm"), false);
        assert!(
            p.starts_with("runs") && p.to_string_lossy().contains("my_vllm-"),
            "{p:?}"
        );
    }

    #[test]
    fn validation_names_the_value() {
        let bad = |c: ReplayConfig| c.validate().unwrap_err().to_string();
        let base = ReplayConfig {
            rates: vec![5.0],
            ..Default::default()
        };
        assert!(
            bad(ReplayConfig {
                rates: vec![0.0],
                ..base.clone()
            })
            .contains("'0'")
        );
        assert!(
            bad(ReplayConfig {
                requests: Some(0),
                ..base.clone()
            })
            .contains("'0'")
        );
        assert!(
            bad(ReplayConfig {
                rates: vec![],
                ..base.clone()
            })
            .contains("--rate")
        );
        assert!(base.validate().is_ok());
    }

    #[test]
    fn plans_one_stage_per_rate_and_a_warmup() {
        let cfg = ReplayConfig {
            rates: vec![1.0, f64::INFINITY],
            requests: Some(3),
            warmup: 2,
            arrival: Arrival::Constant,
            ..Default::default()
        };
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let p = plan_stages(&cfg, &w).unwrap();
        let labels: Vec<&str> = p.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["warmup", "rate=1", "rate=inf"]);
        assert_eq!(p[1].offsets_ns, [0, 1_000_000_000, 2_000_000_000]);
        assert_eq!(p[2].offsets_ns, [0, 0, 0]);
        assert_eq!((p[1].first_item, p[2].first_item), (0, 3));
        assert_eq!(p[0].offsets_ns.len(), 2);
    }

    #[test]
    fn stage_duration_sizes_each_stage_by_its_rate() {
        let cfg = ReplayConfig {
            rates: vec![0.5, 2.0, 0.01],
            stage_duration: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let p = plan_stages(&cfg, &w).unwrap();
        let counts: Vec<usize> = p.iter().map(|s| s.offsets_ns.len()).collect();
        // 0.01 req/s for 60 s rounds to 1: a stage is never empty.
        assert_eq!(counts, [30, 120, 1]);
        // Items continue across stages, so two runs of the same sweep pair request by request.
        let firsts: Vec<u64> = p.iter().map(|s| s.first_item).collect();
        assert_eq!(firsts, [0, 30, 150]);
        // Poisson offsets are rescaled to the exact rate: the last arrival lands inside 60 s.
        let last = *p[1].offsets_ns.last().unwrap();
        assert!(last > 50_000_000_000 && last < 60_000_000_000, "{last}");

        let bad = |c: ReplayConfig| c.validate().unwrap_err().to_string();
        assert!(
            bad(ReplayConfig {
                requests: Some(5),
                ..cfg.clone()
            })
            .contains("not both")
        );
        assert!(
            bad(ReplayConfig {
                rates: vec![1.0, f64::INFINITY],
                ..cfg.clone()
            })
            .contains("finite --rate")
        );
    }

    #[tokio::test]
    async fn metrics_404_means_no_samples_and_no_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            sample_metrics(metrics_url(&url), Instant::now(), rx),
        )
        .await
        .expect("a 404 ends sampling at once");
        assert!(got.0.is_empty());
    }
}
