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
use trace_client::{Client, Prompt, RequestSpec, ServerApi, ServerUrl};
use trace_format::{
    ClientMeta, ScheduleMeta, StageInfo, TraceMeta, TraceRecord, WriterOptions, meta,
};
use trace_sys::RunClock;

use crate::Error;
use crate::config::ReplayConfig;
use crate::dispatch::{Counters, Dispatcher, RequestSender, SendFuture, Sink};
use crate::plan::plan_stages;
use crate::prompts::{PromptLengths, Vocab};
use crate::schedule::Arrival;
use crate::summary::StageSummary;
use crate::workload::{PromptMaker, WorkItem, Workload, WorkloadSpec};

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
    /// How prompt lengths were made exact.
    pub prompt_lengths: PromptLengths,
    /// Sessions sent (warmup left out), when the workload was replayed as sessions.
    pub sessions: Option<u64>,
    /// Things the user must read: uncalibrated prompt lengths, prompts the server counted
    /// differently from the workload.
    pub warnings: Vec<String>,
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
            let prompt = if item.history.is_empty() {
                Prompt::Text(item.prompt.clone())
            } else {
                Prompt::Chat(crate::session::messages(&item.history, &item.prompt))
            };
            let spec = RequestSpec {
                request_id: item.request_id.clone(),
                prompt,
                // A turn with history is longer than its own input: the server counts it.
                prompt_tokens: i32::try_from(item.prompt_tokens).ok(),
                max_tokens: item.max_tokens.and_then(|m| i32::try_from(m).ok()),
                keep_output: item.keep_output,
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
    let sweep = !cfg.concurrencies.is_empty();
    ScheduleMeta {
        arrival: (!recorded && !sweep).then(|| cfg.arrival.clone()),
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
        concurrencies: cfg.concurrencies.clone(),
        seed: Some(cfg.seed),
        rescaled_to_exact_rate: !recorded
            && !sweep
            && !matches!(cfg.arrival, Arrival::Constant | Arrival::Daily { .. }),
        timer: Some(format!("{:?}", cfg.timer).to_lowercase()),
        ..ScheduleMeta::default()
    }
}

/// What the run learnt about prompts before sending: how lengths are made exact, and the
/// tokens the server's template adds to each prompt.
struct Prompts {
    maker: PromptMaker,
    lengths: PromptLengths,
    warnings: Vec<String>,
}

/// Makes synthetic prompt lengths exact against this server: through a local tokenizer, else
/// the server's `/tokenize`; else whitespace words, with a warning. Then measures the tokens the
/// server adds around a prompt (a chat template, a BOS token) with one request of a known
/// length, so that synthetic content is that much shorter.
async fn prompts_for(
    cfg: &ReplayConfig,
    api: &ServerApi,
    tokenize: bool,
    client: &Client,
) -> Result<Prompts, Error> {
    // Prompts the run makes up; ShareGPT and datasets bring their own text.
    let synthetic = matches!(
        cfg.workload,
        WorkloadSpec::Random(_) | WorkloadSpec::Trace(_)
    );
    let mut maker = PromptMaker::default();
    let mut warnings = Vec::new();
    let lengths = if let Some(t) = client.shared_tokenizer() {
        maker.vocab = Vocab::from_tokenizer(&t).ok().map(Arc::new);
        maker.tokenizer = Some(t);
        PromptLengths::Tokenizer
    } else if tokenize && synthetic {
        maker.vocab = Some(Arc::new(Vocab::from_server(api).await?));
        PromptLengths::TokenizeEndpoint
    } else {
        if synthetic {
            warnings.push(
                "PROMPT LENGTHS ARE NOT EXACT: the server has no /tokenize endpoint and no \
                 --tokenizer was given, so synthetic prompts are whitespace words; on a BPE \
                 vocabulary a word is several tokens. Give --tokenizer with the model's \
                 tokenizer.json."
                    .to_string(),
            );
        }
        PromptLengths::Words
    };
    if synthetic && lengths != PromptLengths::Words {
        maker.template_tokens = template_tokens(client, &maker).await;
    }
    Ok(Prompts {
        maker,
        lengths,
        warnings,
    })
}

/// Tokens the server counts beyond a prompt's own (a chat template, special tokens), from one
/// request of a known length and one output token; 0 when the server reports no usage.
async fn template_tokens(client: &Client, maker: &PromptMaker) -> u32 {
    const PROBE: u32 = 32;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(u64::MAX);
    let prompt = maker.random(&mut rng, u64::MAX / 2, PROBE);
    let spec = RequestSpec {
        request_id: "trace-prompt-probe".into(),
        prompt: Prompt::Text(prompt),
        prompt_tokens: None,
        max_tokens: Some(1),
        keep_output: false,
    };
    let mut rec = TraceRecord::default();
    client.send(&spec, &RunClock::start(), &mut rec).await;
    match (rec.error_kind, rec.prompt_tokens) {
        (None, Some(n)) if n >= PROBE as i32 => n as u32 - PROBE,
        _ => 0,
    }
}

/// Open files kept free of in-flight requests: the writer's part and merge files, the
/// runtime, stdio, the tokenizer, /metrics, the embedded simulator's listener.
const FD_RESERVE: u64 = 128;

/// Raises the open-file limit as far as allowed and returns the most requests that can be in
/// flight under it, `None` when it is no real bound. Without this cap, a run under `ulimit -n
/// 1024` opened sockets until the writer could not open its part file and lost every row.
fn fd_cap(fds_per_request: usize, lean: bool) -> Option<usize> {
    let limit = trace_sys::raise_nofile_limit()?;
    // Through hyper, half of what is left: a finished request's connection returns to hyper's
    // pool a moment after its slot frees, so a new one may open meanwhile (measured: 896 in
    // flight under `ulimit -n 1024` still ran out of files). The lean client's connection is
    // back in its pool before the slot frees, and it connects only with an empty pool.
    let share = if lean { 1 } else { 2 };
    let room = limit.saturating_sub(FD_RESERVE) / (share * fds_per_request.max(1) as u64);
    (room < 1 << 20).then_some(room.max(1) as usize)
}

/// Runs a replay to its end (or until `stop` is cancelled and the drain is over), writing one
/// trace file.
pub async fn run(
    mut cfg: ReplayConfig,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<Summary, Error> {
    cfg.validate()?;
    let fd_cap = fd_cap(cfg.fds_per_request, trace_client::lean_http1(&cfg.client));
    let asked = cfg.max_concurrency;
    if let Some(cap) = fd_cap {
        if cfg.max_concurrency.is_none_or(|m| m > cap) {
            cfg.max_concurrency = Some(cap);
        }
        for c in &mut cfg.concurrencies {
            *c = (*c).min(cap);
        }
    }
    let target = ServerUrl::parse(&cfg.client.base_url)?;
    // Bad input fails before anything is sent: the tokenizer and the workload file first.
    if let Some(p) = &cfg.client.tokenizer {
        trace_client::HfTokenizer::load(p)?;
    }
    if !matches!(cfg.workload, WorkloadSpec::Random(_)) {
        Workload::load(&cfg.workload, cfg.seed, &cfg.sessions)?;
    }
    let api = ServerApi::new(
        &cfg.client.base_url,
        cfg.client.api_key.as_deref(),
        &cfg.client.transport,
        cfg.client.model.clone(),
        Duration::from_secs(10),
    )?;
    let info = api.probe().await?;
    if cfg.client.model.is_none() {
        let models = if info.models.is_empty() {
            let listed = trace_client::list_models(
                &cfg.client.base_url,
                cfg.client.api_key.as_deref(),
                &cfg.client.transport,
                Duration::from_secs(10),
            )
            .await;
            match listed {
                Ok(m) => m,
                // Native routes name no model (TGI, SGLang) or take it from --model (Triton,
                // custom): a server without /v1/models is served under the route's name.
                Err(_) if !cfg.client.endpoint.is_openai() => {
                    vec![cfg.client.endpoint.as_str().to_string()]
                }
                Err(source) => {
                    return Err(Error::Models {
                        url: target.redacted(),
                        source,
                    });
                }
            }
        } else {
            info.models.clone()
        };
        cfg.client.model = models.into_iter().next();
    }
    // llama.cpp ignores continuous usage; its timings give exact per-event counts.
    cfg.client.timings_per_token |= info.is_llamacpp();
    let client = Client::new(cfg.client.clone())?;
    let resends = client.resends();
    let client_meta = client.clone();
    let model = client.model().to_string();
    let api = ServerApi::new(
        &cfg.client.base_url,
        cfg.client.api_key.as_deref(),
        &cfg.client.transport,
        Some(model.clone()),
        Duration::from_secs(10),
    )?;
    let prompts = prompts_for(&cfg, &api, info.tokenize, &client).await?;
    let mut workload = Workload::load(&cfg.workload, cfg.seed, &cfg.sessions)?;
    workload.set_prompts(prompts.maker.clone());
    let workload = Arc::new(workload);
    let plans = plan_stages(&cfg, &workload)?;

    // The start barrier: every shard starts its clock at the coordinator's common time.
    let barrier = match (&cfg.coordinator, cfg.shard) {
        (Some(url), Some(sh)) => {
            let b = trace_client::barrier::join(
                url,
                sh.index,
                sh.count,
                &trace_sys::hostname(),
                &cfg.client.transport,
                cfg.barrier_timeout,
            )
            .await?;
            Some(b)
        }
        _ => None,
    };
    let clock = RunClock::start();
    // With a barrier the first stage's schedule starts at the common instant (this host's
    // setup below happens inside the coordinator's lead), so every shard's arrival k is due at
    // the same coordinator time; a setup that overran the lead shows as send lag.
    let barrier_at =
        barrier.map(|b| clock.instant_at(b.local_start_unix_ns() - clock.start_unix_ns()));
    let mut m = TraceMeta::new();
    m.set(meta::RUN_START_UNIX_NS, clock.start_unix_ns().to_string());
    m.set(meta::URL, target.redacted());
    if let Some(l) = &cfg.label {
        m.set(meta::LABEL, l.clone());
    }
    m.set(meta::WORKLOAD, workload.spec_json().to_string());
    m.set(meta::SEED, cfg.seed.to_string());
    if let Some(c) = &cfg.campaign {
        m.set(meta::CAMPAIGN, c.clone());
    }
    if let Some(s) = cfg.shard {
        m.set(
            meta::SHARD,
            serde_json::json!({
                "index": s.index, "count": s.count,
                "schedule_id": crate::plan::schedule_id(&plans, workload.spec_json(), cfg.seed),
                "host": trace_sys::hostname(),
                // On the coordinator's clock, with the bound of this host's offset to it.
                "run_start_coord_ns": barrier.map(|b| clock.start_unix_ns() + b.offset_ns),
                "offset_ns": barrier.map(|b| b.offset_ns),
                "offset_error_ns": barrier.map(|b| b.error_ns),
                "barrier_start_unix_ns": barrier.map(|b| b.start_unix_ns),
                // What this host's kernel believes about its wall clock (adjtimex), the error
                // a merge without a barrier rests on.
                "kernel_clock": trace_sys::kernel_clock(),
            })
            .to_string(),
        );
    }
    if let Some(n) = workload.session_count() {
        let o = &cfg.sessions;
        m.set(
            meta::SESSIONS,
            serde_json::json!({
                "sessions": n,
                "history": o.history.as_str(),
                "on_turn_error": match o.on_turn_error {
                    crate::session::OnTurnError::End => "end",
                    crate::session::OnTurnError::Continue => "continue",
                },
                "max_sessions": o.max_sessions,
                "think_scale": o.think_scale,
                "skipped_rows": workload.skipped().len(),
            })
            .to_string(),
        );
    }
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
        prompt_lengths: Some(prompts.lengths.as_str().into()),
        chat_template_tokens: Some(prompts.maker.template_tokens),
        event_tokens: Some(
            if cfg.client.continuous_usage && !info.is_llamacpp() {
                "usage"
            } else if cfg.client.timings_per_token {
                "timings"
            } else {
                "events"
            }
            .into(),
        ),
        headers: cfg.client.transport.header_names(),
        tls_insecure: cfg.client.transport.insecure,
    });
    let (tx, writer) = trace_format::spawn_writer(
        &cfg.output,
        m,
        WriterOptions {
            overwrite: cfg.force,
            ..WriterOptions::default()
        },
    )?;

    let scrape_stop = CancellationToken::new();
    let scraper = cfg.scrape_metrics.then(|| {
        tokio::spawn(trace_client::sample_every(
            target.metrics(),
            cfg.client.transport.clone(),
            cfg.metrics_interval,
            clock,
            scrape_stop.clone(),
        ))
    });

    let gpu_scraper = match &cfg.gpu_metrics {
        crate::GpuTelemetry::Off => None,
        crate::GpuTelemetry::Auto if !target.is_loopback() => None,
        crate::GpuTelemetry::Dcgm(url) => {
            let (url, transport, stop) = (
                url.clone(),
                cfg.client.transport.clone(),
                scrape_stop.clone(),
            );
            let period = cfg.metrics_interval;
            Some(tokio::spawn(async move {
                let got =
                    trace_client::sample_gpus_every(url, transport, period, clock, stop).await;
                Ok(got)
            }))
        }
        crate::GpuTelemetry::Auto | crate::GpuTelemetry::Nvml => Some(tokio::spawn(
            trace_client::nvml::sample_nvml_every(cfg.metrics_interval, clock, scrape_stop.clone()),
        )),
    };

    // Cancelled by the caller's `stop`, or by the sink when the writer dies.
    let run_stop = stop.child_token();
    let d = Dispatcher {
        sender: Arc::new(ClientSender { client }),
        sink: Sink::Parquet {
            tx,
            stop: run_stop.clone(),
        },
        max_concurrency: cfg.max_concurrency,
        timer: cfg.timer,
        counters: counters.clone(),
        stop: run_stop.clone(),
        cancel: CancellationToken::new(),
        drain_timeout: cfg.drain_timeout,
        sessions: cfg.sessions,
        store_output: cfg.client.store_output,
        shard: cfg.shard,
    };
    let mut infos = Vec::new();
    let mut summaries = Vec::new();
    let mut sessions_sent = 0;
    for plan in &plans {
        if run_stop.is_cancelled() {
            break;
        }
        let wl = if plan.label == "warmup" {
            Arc::new(workload.with_id_prefix("warmup-"))
        } else {
            workload.clone()
        };
        let at = if infos.is_empty() { barrier_at } else { None };
        let out = d.run_stage_at(&clock, plan, wl, at).await;
        infos.push(StageInfo {
            stage: out.label.clone(),
            target_rate: out.target_rate,
            start_ns: out.start_ns,
            end_ns: Some(out.end_ns),
            requests: out.rows,
        });
        writer.set_meta(meta::STAGES, trace_format::to_json(&infos));
        if out.label != "warmup" {
            summaries.push(out.stats.summary(&out.label, out.target_rate));
            sessions_sent += out.released;
        }
    }
    drop(d);
    let resent = resends.load(std::sync::atomic::Ordering::Relaxed);
    if resent > 0 {
        writer.set_meta(meta::RESENDS, resent.to_string());
    }
    if let Some(v) = client_meta.http_version() {
        writer.set_meta(meta::HTTP_VERSION, v);
        writer.set_meta(meta::HTTP_CLIENT, client_meta.http_client());
    }

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
    let mut gpu_note = None;
    if let Some(h) = gpu_scraper {
        let source = match &cfg.gpu_metrics {
            crate::GpuTelemetry::Dcgm(url) => url.clone(),
            _ => "nvml".to_string(),
        };
        match h.await {
            Ok(Ok(got)) if !got.is_empty() => {
                writer.set_meta(meta::GPU_SAMPLES, trace_format::to_json(&got));
                writer.set_meta(meta::GPU_SOURCE, source);
            }
            // Auto: the engine is on this host but its GPUs are not NVIDIA's, or there are none.
            _ if cfg.gpu_metrics == crate::GpuTelemetry::Auto => {}
            Ok(Err(why)) => gpu_note = Some(format!("no GPU telemetry: {why}")),
            _ => {
                gpu_note = Some(format!(
                    "no GPU telemetry from {source}: it never answered with DCGM metrics"
                ));
            }
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
        prompt_lengths: prompts.lengths,
        sessions: workload.session_count().map(|_| sessions_sent),
        warnings: {
            let mut w = prompts.warnings;
            w.extend(gpu_note);
            if let Some(first) = workload.skipped().first() {
                w.push(format!(
                    "{} row(s) of the workload were left out for bad session links (--skip-bad); \
                     the first: {first}",
                    workload.skipped().len()
                ));
            }
            if resent > 0 {
                w.push(format!(
                    "{resent} request(s) were sent a second time: the server closed their \
                     kept-alive connection before answering (llama-server closes each one after \
                     a streamed response); the resend is part of their TTFT"
                ));
            }
            let most = counters
                .max_in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Some(cap) = fd_cap
                && most >= cap as i64
                && asked.is_none_or(|a| a > cap)
            {
                let (soft, hard) = trace_sys::nofile_limit();
                // The soft limit was raised to the hard one where the kernel allowed it.
                let raise = if soft == hard {
                    "the hard limit (ulimit -Hn, as root)"
                } else {
                    "the limit (ulimit -n)"
                };
                w.push(format!(
                    "the open-file limit ({}) allowed at most {cap} requests in flight, and the \
                     schedule wanted more at once: those waited for a free slot (their send lag \
                     shows it); to send them on time raise {raise}, or split the run over \
                     processes (--processes N, each with files of its own) or hosts (--shard k/n)",
                    soft.map_or("unlimited".into(), |s| s.to_string())
                ));
            }
            w
        },
    })
}
