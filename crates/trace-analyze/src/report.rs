//! `trace report`: the per-stage numbers serving engineers read, saturation per stage and for
//! the run ([`Report`]). Its text, markdown and CSV renderings live in `crate::render`; JSON is
//! the serde form of [`Report`], whose fields docs/report-json.md documents.

use serde::Serialize;
use trace_format::meta;

use crate::load::{RunData, StageData};
use crate::saturation::{RunSaturation, StageSaturation, run_saturation, stage_saturation};
use trace_stats::{Dist, dist_f64, dist_of};

/// Version of the JSON document; bumped on incompatible changes (docs/report-json.md).
pub const REPORT_SCHEMA: &str = "trace.report/2";

/// Send lag P99 above this many ms (and above [`SEND_LAG_TTFT_FRACTION`] of the median TTFT)
/// raises a warning: the client did not hold the schedule, so the offered load was not the one
/// asked for.
pub const SEND_LAG_WARN_MS: f64 = 1.0;
/// See [`SEND_LAG_WARN_MS`].
pub const SEND_LAG_TTFT_FRACTION: f64 = 0.05;

/// Service-level objectives for goodput: a request is good when it meets every one given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Slo {
    /// TTFT limit, ms.
    pub ttft_ms: Option<f64>,
    /// TPOT limit, ms (requests with one output token pass it).
    pub tpot_ms: Option<f64>,
    /// E2E limit, ms.
    pub e2e_ms: Option<f64>,
}

impl Slo {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2e_ms.is_none()
    }
}

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Percentile ranks (0..=100); 50 is always added.
    pub percentiles: Vec<f64>,
    /// Goodput objectives.
    pub slo: Slo,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            percentiles: vec![50.0, 90.0, 99.0],
            slo: Slo::default(),
        }
    }
}

impl ReportOptions {
    /// The ranks actually computed: sorted, deduplicated, 50 included.
    pub fn ranks(&self) -> Vec<f64> {
        let mut p = self.percentiles.clone();
        p.push(50.0);
        p.retain(|x| x.is_finite() && (0.0..=100.0).contains(x));
        p.sort_by(f64::total_cmp);
        p.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
        p
    }
}

/// Every latency distribution of a stage, in ms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// First token-bearing event minus sent_ns.
    pub ttft: Dist,
    /// First answer-bearing event minus sent_ns (after any reasoning; TTFT without it).
    pub ttfa: Dist,
    /// (E2E - TTFT) / (output_tokens - 1), requests with more than one output token.
    pub tpot: Dist,
    /// Gaps between consecutive token-bearing events, pooled over requests.
    pub itl: Dist,
    /// ITL with a k-token event's gap spread over its k tokens.
    pub itl_per_token: Dist,
    /// end_ns - sent_ns.
    pub e2e: Dist,
    /// First token-bearing event minus scheduled_ns (includes client queueing).
    pub ttft_from_scheduled: Dist,
    /// end_ns - scheduled_ns.
    pub e2e_from_scheduled: Dist,
    /// sent_ns - scheduled_ns, every sent request (failed ones too).
    pub send_lag: Dist,
    /// headers_ns - sent_ns, completed requests: the engine's queue wait when it answers only
    /// once a request has a slot (llama.cpp), else connection and header latency.
    pub queue_wait: Dist,
}

/// Metric names as used in `--fail-on`, CSV and JSON.
pub const METRIC_NAMES: [&str; 10] = [
    "ttft",
    "ttfa",
    "tpot",
    "itl",
    "itl_per_token",
    "e2e",
    "ttft_from_scheduled",
    "e2e_from_scheduled",
    "send_lag",
    "queue_wait",
];

impl Metrics {
    /// The distribution by name (see [`METRIC_NAMES`]).
    pub fn get(&self, name: &str) -> Option<&Dist> {
        Some(match name {
            "ttft" => &self.ttft,
            "ttfa" => &self.ttfa,
            "tpot" => &self.tpot,
            "itl" => &self.itl,
            "itl_per_token" => &self.itl_per_token,
            "e2e" => &self.e2e,
            "ttft_from_scheduled" => &self.ttft_from_scheduled,
            "e2e_from_scheduled" => &self.e2e_from_scheduled,
            "send_lag" => &self.send_lag,
            "queue_wait" => &self.queue_wait,
            _ => return None,
        })
    }
}

/// One stage's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    /// Stage label.
    pub stage: String,
    /// Requested rate, req/s.
    pub target_rate: Option<f64>,
    /// First scheduled send to last stream end, s.
    pub duration_s: f64,
    /// Requests in the stage.
    pub requests: usize,
    /// Completed requests.
    pub completed: usize,
    /// Failed requests (error_kind set, or never sent / never ended).
    pub failed: usize,
    /// failed / requests.
    pub failure_rate: f64,
    /// Prompt tokens of completed requests.
    pub total_input_tokens: u64,
    /// Output tokens of completed requests.
    pub total_output_tokens: u64,
    /// completed / duration.
    pub request_throughput: f64,
    /// total_input_tokens / duration.
    pub input_throughput: f64,
    /// total_output_tokens / duration.
    pub output_throughput: f64,
    /// (input + output tokens) / duration.
    pub total_token_throughput: f64,
    /// Requests meeting every SLO per second; None without `--slo`.
    pub goodput: Option<f64>,
    /// Fraction of completed requests meeting every SLO; None without `--slo`.
    pub goodput_fraction: Option<f64>,
    /// Reasoning tokens of completed requests; None when no request had a reasoning channel.
    pub reasoning_tokens: Option<u64>,
    /// Prompt tokens the server served from its prefix cache, completed requests that report
    /// it; None when none does.
    pub cached_tokens: Option<u64>,
    /// cached_tokens / the prompt tokens of the same requests; None when none reports it.
    pub cache_hit_rate: Option<f64>,
    /// The server's own prefix-cache hit rate over the stage (the change of its hit and query
    /// counters, `vllm:prefix_cache_hits_total` / `..._queries_total`), when scraped.
    pub server_cache_hit_rate: Option<f64>,
    /// Sessions, for a session workload.
    pub sessions: Option<SessionReport>,
    /// GPU telemetry over the stage, when sampled (`--gpu-metrics`).
    pub gpu: Option<GpuStage>,
    /// Latency distributions, ms.
    pub metrics: Metrics,
    /// Saturation verdict and evidence.
    pub saturation: StageSaturation,
}

/// The GPUs over a stage, from the telemetry samples inside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuStage {
    /// Samples inside the stage.
    pub samples: usize,
    /// GPUs seen.
    pub gpus: usize,
    /// The most memory any one GPU used, MiB.
    pub peak_mem_mib: Option<f64>,
    /// The most memory used by all GPUs together at one sample, MiB.
    pub peak_mem_total_mib: Option<f64>,
    /// Mean utilisation over the samples and GPUs, percent.
    pub mean_util_pct: Option<f64>,
    /// Mean total power draw, W.
    pub mean_power_w: Option<f64>,
}

/// The GPU telemetry samples between `start` and `end` (ns), summarised; None without any.
fn gpu_stage(
    samples: &[trace_format::GpuSample],
    start: Option<i64>,
    end: Option<i64>,
) -> Option<GpuStage> {
    let (start, end) = (start?, end?);
    let inside: Vec<_> = samples
        .iter()
        .filter(|s| (start..=end).contains(&s.t_ns))
        .collect();
    if inside.is_empty() {
        return None;
    }
    let max = |v: &mut dyn Iterator<Item = f64>| {
        v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let per_gpu = || inside.iter().flat_map(|s| s.gpus.iter());
    let totals = |f: fn(&trace_format::GpuReading) -> Option<f64>| -> Vec<f64> {
        inside
            .iter()
            .filter_map(|s| {
                let v: Vec<f64> = s.gpus.iter().filter_map(f).collect();
                (!v.is_empty()).then(|| v.iter().sum())
            })
            .collect()
    };
    let gpus: std::collections::HashSet<&str> = per_gpu().map(|g| g.gpu.as_str()).collect();
    Some(GpuStage {
        samples: inside.len(),
        gpus: gpus.len(),
        peak_mem_mib: max(&mut per_gpu().filter_map(|g| g.mem_used_mib)),
        peak_mem_total_mib: max(&mut totals(|g| g.mem_used_mib).into_iter()),
        mean_util_pct: mean(per_gpu().filter_map(|g| g.util_pct).collect()),
        mean_power_w: mean(totals(|g| g.power_w)),
    })
}

/// A stage's sessions (rows with `session_id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReport {
    /// Sessions with a turn in the stage.
    pub sessions: usize,
    /// Sessions whose every turn completed.
    pub completed: usize,
    /// Sessions with a failed or dropped turn.
    pub failed: usize,
    /// Turns per session, mean.
    pub turns_mean: f64,
    /// Completed sessions' span, first scheduled send to last stream end, s.
    pub duration_s: Dist,
    /// First turns (turn 0).
    pub first_turn: TurnReport,
    /// Later turns (turn >= 1), which resend history and so meet the prefix cache.
    pub later_turns: TurnReport,
}

/// Latency of one group of turns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnReport {
    /// Turns in the group.
    pub turns: usize,
    /// Completed turns.
    pub completed: usize,
    /// TTFT of completed turns, ms.
    pub ttft: Dist,
    /// TPOT of completed turns, ms.
    pub tpot: Dist,
    /// Cached prompt tokens / prompt tokens of completed turns that report them.
    pub cache_hit_rate: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: &'static str,
    /// The trace path as given.
    pub file: String,
    /// Engine label from metadata.
    pub label: Option<String>,
    /// Wall-clock anchor of the run, UNIX ns.
    pub run_start_unix_ns: Option<i64>,
    /// True when read from an interrupted run's `.partial` directory.
    pub interrupted: bool,
    /// Percentile ranks computed.
    pub percentiles: Vec<f64>,
    /// The goodput objectives, when given.
    pub slo: Option<Slo>,
    /// Stages in sweep order.
    pub stages: Vec<StageReport>,
    /// The run's saturation summary.
    pub saturation: RunSaturation,
    /// Warnings a reader must see (send lag, interrupted run, failures).
    pub warnings: Vec<String>,
}

/// Cached prompt tokens of the completed rows that report them, and their share of those rows'
/// prompt tokens; None when none reports.
fn cache_hits<'a>(rows: impl Iterator<Item = &'a crate::ReqRow>) -> (Option<u64>, Option<f64>) {
    let (cached, prompt) = rows
        .filter(|r| r.ok)
        .filter_map(|r| {
            r.cached_tokens
                .map(|c| (u64::from(c), u64::from(r.input_tokens)))
        })
        .fold((None, 0u64), |(c, p), (ci, pi)| {
            (Some(c.unwrap_or(0) + ci), p + pi)
        });
    let rate = cached.map(|c| {
        if prompt > 0 {
            c as f64 / prompt as f64
        } else {
            0.0
        }
    });
    (cached, rate)
}

/// The server's hit rate between `start` and `end` from its cumulative counters: the last
/// sample at or before the start (else the first) to the first at or after the end (else the
/// last). None without counters or without lookups in between.
fn server_hit_rate(
    server: &[crate::ServerPoint],
    start: Option<i64>,
    end: Option<i64>,
) -> Option<f64> {
    let (start, end) = (start?, end?);
    let with: Vec<(i64, f64, f64)> = server
        .iter()
        .filter_map(|p| Some((p.t_ns, p.prefix_queries?, p.prefix_hits?)))
        .collect();
    let a = with.iter().rev().find(|p| p.0 <= start).or(with.first())?;
    let b = with.iter().find(|p| p.0 >= end).or(with.last())?;
    let (q, h) = (b.1 - a.1, b.2 - a.2);
    (q > 0.0 && h >= 0.0).then(|| (h / q).min(1.0))
}

/// Sessions of a stage; None when no row has a session.
fn session_report(s: &StageData, ps: &[f64]) -> Option<SessionReport> {
    use std::collections::HashMap;
    // Per session: turns, any failure, first scheduled send, last end.
    let mut by: HashMap<u32, (usize, bool, i64, i64)> = HashMap::new();
    for r in &s.rows {
        let Some(id) = r.session else { continue };
        let e = by.entry(id).or_insert((0, false, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 |= !r.ok;
        e.2 = e.2.min(r.scheduled_ns);
        e.3 = e.3.max(r.end_ns);
    }
    if by.is_empty() {
        return None;
    }
    let failed = by.values().filter(|v| v.1).count();
    let durations = by
        .values()
        .filter(|v| !v.1 && v.3 > v.2)
        .map(|v| (v.3 - v.2) as f64 / 1e9);
    let group = |first: bool| {
        let rows = || {
            s.rows
                .iter()
                .filter(move |r| r.session.is_some() && (r.turn.unwrap_or(0) == 0) == first)
        };
        TurnReport {
            turns: rows().count(),
            completed: rows().filter(|r| r.ok).count(),
            ttft: dist_f64(rows().filter(|r| r.ok).map(|r| r.ttft_ms), ps),
            tpot: dist_f64(rows().filter(|r| r.ok).map(|r| r.tpot_ms), ps),
            cache_hit_rate: cache_hits(rows()).1,
        }
    };
    Some(SessionReport {
        sessions: by.len(),
        completed: by.len() - failed,
        failed,
        turns_mean: by.values().map(|v| v.0).sum::<usize>() as f64 / by.len() as f64,
        duration_s: dist_f64(durations, ps),
        first_turn: group(true),
        later_turns: group(false),
    })
}

/// Computes the per-stage latency distributions.
pub fn stage_metrics(s: &mut StageData, ps: &[f64]) -> Metrics {
    let ok = |f: fn(&crate::ReqRow) -> f64| {
        let rows = &s.rows;
        dist_f64(rows.iter().filter(|r| r.ok).map(f), ps)
    };
    let ttft = ok(|r| r.ttft_ms);
    let ttfa = ok(|r| r.ttfa_ms);
    let tpot = ok(|r| r.tpot_ms);
    let e2e = ok(|r| r.e2e_ms);
    let ttft_from_scheduled = ok(|r| r.ttft_sched_ms);
    let e2e_from_scheduled = ok(|r| r.e2e_sched_ms);
    let send_lag = dist_f64(s.rows.iter().map(|r| r.send_lag_ms), ps);
    let queue_wait = ok(|r| r.queue_wait_ms);
    let itl = dist_of(&mut s.itl_ms, ps);
    let itl_per_token = match s.itl_per_token_ms.as_mut() {
        Some(v) => dist_of(v, ps),
        None => itl.clone(),
    };
    Metrics {
        ttft,
        ttfa,
        tpot,
        itl,
        itl_per_token,
        e2e,
        ttft_from_scheduled,
        e2e_from_scheduled,
        send_lag,
        queue_wait,
    }
}

/// Builds the report of one run. Reorders the stages' ITL pools (selection, not a sort).
pub fn build(run: &mut RunData, opts: &ReportOptions) -> Report {
    let ps = opts.ranks();
    let mut stages = Vec::new();
    let server = run.server.clone();
    let gpu = run.meta.gpu_samples();
    for s in &mut run.stages {
        let mut r = stage_report(s, &server, &ps, &opts.slo);
        r.gpu = gpu_stage(&gpu, s.start_ns(), s.end_ns());
        stages.push(r);
    }
    let sat_in: Vec<(String, &StageSaturation, f64)> = stages
        .iter()
        .map(|s| (s.stage.clone(), &s.saturation, s.request_throughput))
        .collect();
    let saturation = run_saturation(&sat_in);
    let mut warnings = Vec::new();
    if run.interrupted {
        warnings.push(format!(
            "{} is an interrupted run: only the rows flushed before it stopped are analysed",
            run.path.display()
        ));
    }
    if stages.is_empty() {
        warnings.push("the trace has no rows".into());
    }
    if run.bad_rows > 0 {
        warnings.push(format!(
            "{} rows of {} are impossible and were left out of every figure; the first: {}",
            run.bad_rows,
            run.path.display(),
            run.first_bad.as_deref().unwrap_or("?")
        ));
    }
    warnings.extend(token_count_warnings(run));
    warnings.extend(shard_clock_warning(run, &stages));
    warnings.extend(interrupted_shards_warning(run));
    warnings.extend(lagging_shards_warnings(run, &stages));
    for s in &stages {
        if let Some(w) = send_lag_warning(s) {
            warnings.push(w);
        }
        if s.requests > 0 && s.failure_rate > 0.0 {
            warnings.push(format!(
                "stage {}: {} of {} requests failed ({:.1}%); they are excluded from latency statistics",
                s.stage,
                s.failed,
                s.requests,
                100.0 * s.failure_rate
            ));
        }
    }
    Report {
        schema: REPORT_SCHEMA,
        file: run.path.display().to_string(),
        label: run.meta.get(meta::LABEL).map(str::to_string),
        run_start_unix_ns: run.meta.run_start_unix_ns(),
        interrupted: run.interrupted,
        percentiles: ps,
        slo: (!opts.slo.is_empty()).then_some(opts.slo),
        stages,
        saturation,
        warnings,
    }
}

/// A run merged from shards whose clock offsets are unknown (no start barrier), or whose bound
/// is large against the TTFT measured: the rows of different hosts sit on clocks that disagree
/// by up to that much, which shows in every time across hosts (schedules, throughput windows).
fn shard_clock_warning(run: &RunData, stages: &[StageReport]) -> Option<String> {
    let shards: Vec<serde_json::Value> = run.meta.json(meta::SHARDS)?;
    let ttft = stages
        .iter()
        .filter_map(|s| s.metrics.ttft.median())
        .fold(f64::INFINITY, f64::min);
    let bounds: Option<Vec<i64>> = shards
        .iter()
        .map(|s| s.get("offset_error_ns").and_then(serde_json::Value::as_i64))
        .collect();
    match bounds {
        None => Some(format!(
            "merged from {} shards without a start barrier: their clocks were aligned by the \
             hosts' wall clocks only ({}); use --coordinator to measure the offsets",
            shards.len(),
            kernel_clock_summary(&shards)
        )),
        Some(b) => {
            let worst_ms = b.iter().copied().max().unwrap_or(0) as f64 / 1e6;
            (ttft.is_finite() && worst_ms > SHARD_CLOCK_TTFT_FRACTION * ttft).then(|| {
                format!(
                    "merged from {} shards whose clock offsets are known to within {worst_ms:.3} \
                     ms, more than {:.0}% of the lowest median TTFT ({ttft:.3} ms): times across \
                     hosts are that uncertain",
                    shards.len(),
                    100.0 * SHARD_CLOCK_TTFT_FRACTION
                )
            })
        }
    }
}

/// A merged run some of whose shards were killed (merged from their `.partial` directories):
/// those hosts' rows stop early, so the run's late stages are short of their load.
fn interrupted_shards_warning(run: &RunData) -> Option<String> {
    let shards: Vec<serde_json::Value> = run.meta.json(meta::SHARDS)?;
    let killed: Vec<String> = shards
        .iter()
        .filter(|s| s.get("interrupted") == Some(&serde_json::Value::Bool(true)))
        .map(|s| {
            let k = s
                .get("index")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let host = s
                .get("host")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            format!("{k} ({host})")
        })
        .collect();
    (!killed.is_empty()).then(|| {
        format!(
            "shard(s) {} were interrupted and merged from what they had written: their share of \
             the load stops early, so later stages ran below the scheduled rate",
            killed.join(", ")
        )
    })
}

/// The shards of a merged run that fell behind their share of the schedule, a warning each:
/// their send lag P99 over the whole run (kept by `trace merge`) above the stage limit taken at
/// the lowest median TTFT. The stage warning says the run lagged; this says on which host.
/// Closed-loop runs (every stage at rate `inf`) lag by design and are left alone.
fn lagging_shards_warnings(run: &RunData, stages: &[StageReport]) -> Vec<String> {
    let Some(shards) = run.meta.json::<Vec<serde_json::Value>>(meta::SHARDS) else {
        return Vec::new();
    };
    if stages
        .iter()
        .all(|s| s.target_rate.is_some_and(f64::is_infinite))
    {
        return Vec::new();
    }
    let ttft = stages
        .iter()
        .filter_map(|s| s.metrics.ttft.median())
        .fold(f64::INFINITY, f64::min);
    let limit = send_lag_limit_ms(if ttft.is_finite() { ttft } else { 0.0 });
    shards
        .iter()
        .filter_map(|s| {
            let p99 = s.get("send_lag_p99_us")?.as_f64()? / 1e3;
            (p99 > limit).then(|| {
                let p50 = s
                    .get("send_lag_p50_us")
                    .and_then(serde_json::Value::as_f64)
                    .map_or_else(|| "-".into(), |v| format!("{:.3}", v / 1e3));
                format!(
                    "shard {} ({}) fell behind its share of the schedule: send lag P99 {p99:.3} ms, \
                     P50 {p50} ms (limit {limit:.3} ms); that host lacked CPU, open files or \
                     connections for its streams, or its run was capped (--max-concurrency)",
                    s.get("index").and_then(serde_json::Value::as_u64).unwrap_or(0),
                    s.get("host").and_then(serde_json::Value::as_str).unwrap_or("?"),
                )
            })
        })
        .collect()
}

/// What the shards' kernels said about their wall clocks (adjtimex, in each shard's
/// `kernel_clock`): an unsynchronised host by name, else the largest estimated error.
fn kernel_clock_summary(shards: &[serde_json::Value]) -> String {
    let clocks: Vec<(&str, &serde_json::Value)> = shards
        .iter()
        .filter_map(|s| {
            let host = s
                .get("host")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            s.get("kernel_clock")
                .filter(|k| k.is_object())
                .map(|k| (host, k))
        })
        .collect();
    if clocks.len() < shards.len() {
        return "error unknown: NTP keeps them within milliseconds at best".to_string();
    }
    let unsynced: Vec<&str> = clocks
        .iter()
        .filter(|(_, k)| k.get("synchronized") != Some(&serde_json::Value::Bool(true)))
        .map(|(h, _)| *h)
        .collect();
    if !unsynced.is_empty() {
        return format!(
            "the kernel of {} says its clock is not synchronised: the error is unbounded",
            unsynced.join(", ")
        );
    }
    let est_ms = clocks
        .iter()
        .filter_map(|(_, k)| k.get("est_error_us").and_then(serde_json::Value::as_i64))
        .max()
        .unwrap_or(0) as f64
        / 1e3;
    format!("the hosts' kernels estimate their clock errors at up to {est_ms:.3} ms each")
}

/// A shard clock bound above this fraction of the median TTFT is worth a warning.
const SHARD_CLOCK_TTFT_FRACTION: f64 = 0.05;

/// Prompts whose server count differs from the workload's length by more than this fraction
/// raise a warning.
pub const PROMPT_TOLERANCE: f64 = 0.05;

/// Warnings about token counts the numbers rest on: prompts the server counted differently from
/// the workload's lengths (uncalibrated prompts), and rows whose per-event counts could not be
/// reconciled with the server's total.
pub fn token_count_warnings(run: &RunData) -> Vec<String> {
    let rows = || {
        run.stages
            .iter()
            .flat_map(|s| s.rows.iter())
            .filter(|r| r.ok)
    };
    let known: Vec<f64> = rows()
        .map(|r| f64::from(r.prompt_error))
        .filter(|e| e.is_finite())
        .collect();
    let mut out = Vec::new();
    let off = known.iter().filter(|e| e.abs() > PROMPT_TOLERANCE).count();
    if off > 0 {
        let mut v = known.clone();
        let median = trace_stats::percentile(&mut v, 50.0).unwrap_or(0.0);
        let how = run
            .meta
            .client()
            .and_then(|c| c.prompt_lengths)
            .map_or(String::new(), |p| format!(" (lengths made by: {p})"));
        out.push(format!(
            "PROMPT LENGTHS: the server counted {off} of {} prompts more than {:.0}% away from the \
             workload's length (median {:+.1}%){how}: latencies are for other prompt lengths than \
             asked; calibrate against the server (its /tokenize endpoint) or give --tokenizer",
            known.len(),
            100.0 * PROMPT_TOLERANCE,
            100.0 * median
        ));
    }
    let gaps = rows().filter(|r| r.token_gap != 0).count();
    if gaps > 0 {
        out.push(format!(
            "per-event token counts disagree with the server's usage in {gaps} of {} completed \
             requests (events merged by the server without a per-event count); their \
             itl_per_token spreads are approximate",
            rows().count()
        ));
    }
    out
}

/// The send lag P99 above which the client did not hold its schedule: the larger of
/// [`SEND_LAG_WARN_MS`] and [`SEND_LAG_TTFT_FRACTION`] of the median TTFT (ms).
fn send_lag_limit_ms(median_ttft_ms: f64) -> f64 {
    SEND_LAG_WARN_MS.max(SEND_LAG_TTFT_FRACTION * median_ttft_ms)
}

/// The send-lag warning of a stage, when its P99 exceeds both 1 ms and 5% of the median TTFT.
///
/// Not for a stage at rate `inf` (a concurrency sweep's closed-loop stages): every request is
/// due at once, and its lag is its wait for a slot under the cap, by design.
pub fn send_lag_warning(s: &StageReport) -> Option<String> {
    if s.target_rate.is_some_and(f64::is_infinite) {
        return None;
    }
    let p99 = s.metrics.send_lag.pct(99.0).or(s.metrics.send_lag.max)?;
    let limit = send_lag_limit_ms(s.metrics.ttft.median().unwrap_or(0.0));
    (p99 > limit).then(|| {
        format!(
            "stage {}: send lag P99 is {p99:.3} ms (limit {limit:.3} ms: the larger of 1 ms and 5% of \
             median TTFT); the client fell behind its schedule, so the offered load was lower and \
             burstier than asked",
            s.stage
        )
    })
}

fn stage_report(
    s: &mut StageData,
    server: &[crate::ServerPoint],
    ps: &[f64],
    slo: &Slo,
) -> StageReport {
    let requests = s.rows.len();
    let completed = s.rows.iter().filter(|r| r.ok).count();
    let failed = requests - completed;
    let duration_s = s.duration_s();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    let total_input_tokens: u64 = s
        .rows
        .iter()
        .filter(|r| r.ok)
        .map(|r| u64::from(r.input_tokens))
        .sum();
    let total_output_tokens: u64 = s
        .rows
        .iter()
        .filter(|r| r.ok)
        .map(|r| u64::from(r.output_tokens))
        .sum();
    let (goodput, goodput_fraction) = if slo.is_empty() {
        (None, None)
    } else {
        let good = s
            .rows
            .iter()
            .filter(|r| r.ok)
            .filter(|r| slo.ttft_ms.is_none_or(|l| r.ttft_ms <= l))
            .filter(|r| {
                slo.tpot_ms
                    .is_none_or(|l| r.tpot_ms.is_nan() || r.tpot_ms <= l)
            })
            .filter(|r| slo.e2e_ms.is_none_or(|l| r.e2e_ms <= l))
            .count();
        (
            Some(per_s(good as f64)),
            Some(if completed > 0 {
                good as f64 / completed as f64
            } else {
                0.0
            }),
        )
    };
    let reasoning_tokens = s.rows.iter().any(|r| r.ok && r.reasoning).then(|| {
        s.rows
            .iter()
            .filter(|r| r.ok)
            .map(|r| u64::from(r.reasoning_tokens))
            .sum()
    });
    let (cached, cache_hit_rate) = cache_hits(s.rows.iter());
    let server_cache_hit_rate = server_hit_rate(server, s.start_ns(), s.end_ns());
    let sessions = session_report(s, ps);
    let saturation = stage_saturation(s, server);
    let metrics = stage_metrics(s, ps);
    StageReport {
        stage: s.label.clone(),
        target_rate: s.target_rate,
        duration_s,
        requests,
        completed,
        failed,
        failure_rate: if requests > 0 {
            failed as f64 / requests as f64
        } else {
            0.0
        },
        total_input_tokens,
        total_output_tokens,
        request_throughput: per_s(completed as f64),
        input_throughput: per_s(total_input_tokens as f64),
        output_throughput: per_s(total_output_tokens as f64),
        total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
        goodput,
        goodput_fraction,
        reasoning_tokens,
        cached_tokens: cached,
        cache_hit_rate,
        server_cache_hit_rate,
        sessions,
        gpu: None,
        metrics,
        saturation,
    }
}
