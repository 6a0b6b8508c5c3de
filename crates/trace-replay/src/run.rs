//! [`run`]: a replay from its validated configuration to its file. It loads the workload, plans
//! the stages, asks the target for its model when none is given, anchors the run's one clock,
//! writes the metadata, dispatches the stages through trace-client, samples the server's
//! `/metrics` every second, and returns the per-stage [`Summary`].
//!
//! Warmup: `--warmup N` sends copies of the first N workload items before the first stage, at
//! its rate, recorded under stage `warmup` with ids `warmup-<id>` (data is never thrown away;
//! `trace report` leaves the `warmup` stage out). They are not in the summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trace_client::{Client, Prompt, RequestSpec, ServerUrl};
use trace_format::{
    ClientMeta, ScheduleMeta, StageInfo, TraceMeta, TraceRecord, WriterOptions, meta,
};
use trace_sys::RunClock;

use crate::Error;
use crate::config::ReplayConfig;
use crate::dispatch::{Counters, Dispatcher, RequestSender, SendFuture, Sink};
use crate::plan::plan_stages;
use crate::schedule::Arrival;
use crate::summary::StageSummary;
use crate::workload::{WorkItem, Workload};

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The file written.
    pub output: PathBuf,
    /// The target URL (credentials redacted).
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

/// Sends through trace-client.
struct ClientSender {
    client: Client,
}

impl RequestSender for ClientSender {
    fn send<'a>(
        &'a self,
        item: &'a WorkItem,
        clock: &'a RunClock,
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
                .send_cancellable(&spec, clock, rec, cancel)
                .await;
        })
    }
}

/// The `trace.schedule` value of a replay.
fn schedule_meta(
    cfg: &ReplayConfig,
    workload: &Workload,
    per_stage: Option<usize>,
) -> ScheduleMeta {
    let recorded = workload.timeline_ns().is_some();
    ScheduleMeta {
        arrival: (!recorded).then(|| cfg.arrival.clone()),
        rates: cfg.rates.clone(),
        time_scale: cfg.time_scale,
        // Under --stage-duration each stage has its own count (in trace.stages).
        requests_per_stage: cfg
            .stage_duration
            .is_none()
            .then_some(per_stage.map(|n| n as u64))
            .flatten(),
        stage_duration_s: cfg.stage_duration.map(|d| d.as_secs_f64()),
        warmup: cfg.warmup,
        max_concurrency: cfg.max_concurrency,
        seed: Some(cfg.seed),
        rescaled_to_exact_rate: !recorded
            && !matches!(cfg.arrival, Arrival::Constant | Arrival::Daily { .. }),
        timer: Some(format!("{:?}", cfg.timer).to_lowercase()),
        ..ScheduleMeta::default()
    }
}

/// Runs a replay to its end (or until `stop` is cancelled and the drain is over), writing one
/// trace file.
pub async fn run(
    mut cfg: ReplayConfig,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<Summary, Error> {
    cfg.validate()?;
    trace_sys::raise_nofile_limit();
    let target = ServerUrl::parse(&cfg.client.base_url)?;
    let mut workload = Workload::load(&cfg.workload, cfg.seed)?;
    if let Some(p) = &cfg.client.tokenizer {
        workload.set_tokenizer(Arc::new(trace_client::HfTokenizer::load(p)?));
    }
    let workload = Arc::new(workload);
    let plans = plan_stages(&cfg, &workload)?;

    if cfg.client.model.is_none() {
        let models = trace_client::list_models(
            &cfg.client.base_url,
            cfg.client.api_key.as_deref(),
            Duration::from_secs(10),
        )
        .await
        .map_err(|source| Error::Models {
            url: target.redacted(),
            source,
        })?;
        cfg.client.model = models.into_iter().next();
    }
    let client = Client::new(cfg.client.clone())?;
    let model = client.model().to_string();

    let clock = RunClock::start();
    let mut m = TraceMeta::new();
    m.set(meta::RUN_START_UNIX_NS, clock.start_unix_ns().to_string());
    m.set(meta::URL, target.redacted());
    if let Some(l) = &cfg.label {
        m.set(meta::LABEL, l.clone());
    }
    m.set(meta::WORKLOAD, workload.spec_json().to_string());
    m.set(meta::SEED, cfg.seed.to_string());
    m.set_schedule(&schedule_meta(
        &cfg,
        &workload,
        plans.last().map(|p| p.offsets_ns.len()),
    ));
    m.set_client(&ClientMeta {
        endpoint: cfg.client.endpoint.as_str().into(),
        model: model.clone(),
        timeout_s: cfg.client.timeout.as_secs_f64(),
        ignore_eos: cfg.client.ignore_eos,
        continuous_usage: cfg.client.continuous_usage,
        tokenizer: cfg
            .client
            .tokenizer
            .as_ref()
            .map(|p| p.display().to_string()),
    });
    let (tx, writer) = trace_format::spawn_writer(&cfg.output, m, WriterOptions::default())?;

    let scrape_stop = CancellationToken::new();
    let scraper = cfg.scrape_metrics.then(|| {
        tokio::spawn(trace_client::sample_every(
            target.metrics(),
            Duration::from_secs(1),
            clock,
            scrape_stop.clone(),
        ))
    });

    let d = Dispatcher {
        sender: Arc::new(ClientSender { client }),
        sink: Sink::Parquet(tx),
        max_concurrency: cfg.max_concurrency,
        timer: cfg.timer,
        counters: counters.clone(),
        stop: stop.clone(),
        cancel: CancellationToken::new(),
        drain_timeout: cfg.drain_timeout,
    };
    let mut infos = Vec::new();
    let mut summaries = Vec::new();
    for plan in &plans {
        if stop.is_cancelled() {
            break;
        }
        let wl = if plan.label == "warmup" {
            Arc::new(workload.with_id_prefix("warmup-"))
        } else {
            workload.clone()
        };
        let out = d.run_stage(&clock, plan, wl).await;
        infos.push(StageInfo {
            stage: out.label.clone(),
            target_rate: out.target_rate,
            start_ns: out.start_ns,
            end_ns: Some(out.end_ns),
            requests: out.released,
        });
        writer.set_meta(meta::STAGES, trace_format::to_json(&infos));
        if out.label != "warmup" {
            summaries.push(out.stats.summary(&out.label, out.target_rate));
        }
    }
    drop(d);

    scrape_stop.cancel();
    let mut n_samples = 0;
    if let Some(h) = scraper
        && let Ok(got) = h.await
        && !got.samples.is_empty()
    {
        n_samples = got.samples.len();
        writer.set_meta(meta::SERVER_SAMPLES, trace_format::to_json(&got.samples));
        if let Some(e) = got.engine {
            writer.set_meta(meta::SERVER_ENGINE, e);
        }
    }
    // Merging the parts is blocking file work.
    let stats = match tokio::task::spawn_blocking(move || writer.close()).await {
        Ok(closed) => closed?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    Ok(Summary {
        output: cfg.output,
        url: target.redacted(),
        model,
        stages: summaries,
        server_samples: n_samples,
        max_in_flight: counters
            .max_in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        interrupted: stop.is_cancelled(),
        rows: stats.rows,
    })
}
