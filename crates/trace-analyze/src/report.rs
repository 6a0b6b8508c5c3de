//! `trace report`: the per-stage table serving engineers read, saturation per stage and for the
//! run, and its renderings (text, markdown, CSV; JSON is the serde form of [`Report`], whose
//! fields docs/report-json.md documents).

use std::fmt::Write as _;

use serde::Serialize;
use trace_format::meta;

use crate::load::{RunData, StageData};
use crate::saturation::{RunSaturation, StageSaturation, run_saturation, stage_saturation};
use crate::stats::{Dist, dist_f64, dist_of, p_label};

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
}

/// Metric names as used in `--fail-on`, CSV and JSON.
pub const METRIC_NAMES: [&str; 8] = [
    "ttft",
    "tpot",
    "itl",
    "itl_per_token",
    "e2e",
    "ttft_from_scheduled",
    "e2e_from_scheduled",
    "send_lag",
];

impl Metrics {
    /// The distribution by name (see [`METRIC_NAMES`]).
    pub fn get(&self, name: &str) -> Option<&Dist> {
        Some(match name {
            "ttft" => &self.ttft,
            "tpot" => &self.tpot,
            "itl" => &self.itl,
            "itl_per_token" => &self.itl_per_token,
            "e2e" => &self.e2e,
            "ttft_from_scheduled" => &self.ttft_from_scheduled,
            "e2e_from_scheduled" => &self.e2e_from_scheduled,
            "send_lag" => &self.send_lag,
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
    /// Latency distributions, ms.
    pub metrics: Metrics,
    /// Saturation verdict and evidence.
    pub saturation: StageSaturation,
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

/// Computes the per-stage latency distributions.
pub fn stage_metrics(s: &mut StageData, ps: &[f64]) -> Metrics {
    let ok = |f: fn(&crate::ReqRow) -> f64| {
        let rows = &s.rows;
        dist_f64(rows.iter().filter(|r| r.ok).map(f), ps)
    };
    let ttft = ok(|r| r.ttft_ms);
    let tpot = ok(|r| r.tpot_ms);
    let e2e = ok(|r| r.e2e_ms);
    let ttft_from_scheduled = ok(|r| r.ttft_sched_ms);
    let e2e_from_scheduled = ok(|r| r.e2e_sched_ms);
    let send_lag = dist_f64(s.rows.iter().map(|r| r.send_lag_ms), ps);
    let itl = dist_of(&mut s.itl_ms, ps);
    let itl_per_token = match s.itl_per_token_ms.as_mut() {
        Some(v) => dist_of(v, ps),
        None => itl.clone(),
    };
    Metrics {
        ttft,
        tpot,
        itl,
        itl_per_token,
        e2e,
        ttft_from_scheduled,
        e2e_from_scheduled,
        send_lag,
    }
}

/// Builds the report of one run. Reorders the stages' ITL pools (selection, not a sort).
pub fn build(run: &mut RunData, opts: &ReportOptions) -> Report {
    let ps = opts.ranks();
    let mut stages = Vec::new();
    let server = run.server.clone();
    for s in &mut run.stages {
        stages.push(stage_report(s, &server, &ps, &opts.slo));
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

/// The send-lag warning of a stage, when its P99 exceeds both 1 ms and 5% of the median TTFT.
pub fn send_lag_warning(s: &StageReport) -> Option<String> {
    let p99 = s.metrics.send_lag.pct(99.0).or(s.metrics.send_lag.max)?;
    let ttft = s.metrics.ttft.median().unwrap_or(0.0);
    let limit = SEND_LAG_WARN_MS.max(SEND_LAG_TTFT_FRACTION * ttft);
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
        metrics,
        saturation,
    }
}

/// Formats an optional number with `prec` decimals, `-` when absent.
pub fn num(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

const TABLE_METRICS: [(&str, &str); 8] = [
    ("ttft", "TTFT"),
    ("tpot", "TPOT"),
    ("itl", "ITL"),
    ("itl_per_token", "ITL per token"),
    ("e2e", "E2E"),
    ("ttft_from_scheduled", "TTFT from sched."),
    ("e2e_from_scheduled", "E2E from sched."),
    ("send_lag", "Send lag"),
];

/// The evidence behind a verdict, one item per series.
fn evidence(sat: &StageSaturation) -> Vec<String> {
    let mut e = Vec::new();
    if let (Some((a, b)), Some(svc)) = (sat.window_s, sat.service_time_s) {
        e.push(format!(
            "steady window {a:.1}-{b:.1} s of the arrivals (service time ~{svc:.2} s)"
        ));
    }
    for (name, t) in [("TTFT", sat.ttft), ("TPOT", sat.tpot)] {
        if let Some(t) = t {
            let mk = t
                .mann_kendall
                .map_or(String::new(), |m| format!(", Mann-Kendall z={:.2}", m.z));
            e.push(format!(
                "{name} slope {:+.4} s/s [95% CI {:+.4}, {:+.4}], rise {:+.1} ms on a median of {:.1}{mk}",
                t.slope.slope, t.slope.ci_low, t.slope.ci_high, t.rise_ms, t.median_ms
            ));
        }
    }
    if let (Some(s), Some(m)) = (sat.backlog_slope, sat.backlog_mean) {
        e.push(format!(
            "backlog slope {:+.2} req/s [{:+.2}, {:+.2}], mean {m:.1}",
            s.slope, s.ci_low, s.ci_high
        ));
    }
    if let Some(c) = sat.completion_ratio {
        e.push(format!("completions/arrivals {c:.2}"));
    }
    if let Some(s) = sat.send_lag_slope {
        e.push(format!("send-lag slope {:+.2e} s/s", s.slope));
    }
    if let Some(s) = sat.server_queue_slope {
        e.push(format!(
            "server queue slope {:+.2} req/s [{:+.2}, {:+.2}]",
            s.slope, s.ci_low, s.ci_high
        ));
    }
    if let Some(m) = sat.capacity_estimate {
        e.push(format!("capacity estimate {m:.2} req/s"));
    }
    e
}

impl Report {
    /// Plain text: one block per stage, then the run's saturation line and warnings.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "trace report {}{}  ({} stage{})",
            self.file,
            self.label
                .as_ref()
                .map_or(String::new(), |l| format!("  label {l}")),
            self.stages.len(),
            if self.stages.len() == 1 { "" } else { "s" }
        );
        for s in &self.stages {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "== stage {}{} : {} ==",
                s.stage,
                s.target_rate
                    .map_or(String::new(), |r| format!(" (target {r:.2} req/s)")),
                s.saturation.verdict.as_str()
            );
            let kv = |o: &mut String, k: &str, v: String| {
                let _ = writeln!(o, "{k:<36}{v:>14}");
            };
            kv(&mut o, "Duration (s):", format!("{:.2}", s.duration_s));
            kv(&mut o, "Requests completed:", s.completed.to_string());
            kv(&mut o, "Requests failed:", s.failed.to_string());
            kv(
                &mut o,
                "Total input tokens:",
                s.total_input_tokens.to_string(),
            );
            kv(
                &mut o,
                "Total output tokens:",
                s.total_output_tokens.to_string(),
            );
            kv(
                &mut o,
                "Request throughput (req/s):",
                format!("{:.2}", s.request_throughput),
            );
            if let Some(g) = s.goodput {
                kv(&mut o, "Goodput (req/s):", format!("{g:.2}"));
            }
            kv(
                &mut o,
                "Input token throughput (tok/s):",
                format!("{:.2}", s.input_throughput),
            );
            kv(
                &mut o,
                "Output token throughput (tok/s):",
                format!("{:.2}", s.output_throughput),
            );
            kv(
                &mut o,
                "Total token throughput (tok/s):",
                format!("{:.2}", s.total_token_throughput),
            );
            let _ = write!(o, "{:<20}{:>10}", "latency (ms)", "mean");
            for p in &self.percentiles {
                let _ = write!(o, "{:>10}", p_label(*p));
            }
            let _ = writeln!(o);
            for (key, name) in TABLE_METRICS {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                if key == "itl_per_token" && s.metrics.itl_per_token == s.metrics.itl {
                    continue;
                }
                let _ = write!(o, "{name:<20}{:>10}", num(d.mean, 2));
                for p in &self.percentiles {
                    let _ = write!(o, "{:>10}", num(d.pct(*p), 2));
                }
                let _ = writeln!(o);
            }
            let _ = writeln!(
                o,
                "Saturation: {}: {}",
                s.saturation.verdict.as_str(),
                s.saturation.reason
            );
            for e in evidence(&s.saturation) {
                let _ = writeln!(o, "  {e}");
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "Run: {}", self.saturation.summary);
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        o
    }

    /// GitHub-flavoured markdown: a summary table, then a latency table per stage.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# trace report `{}`\n", self.file);
        let _ = writeln!(
            o,
            "| stage | target req/s | duration s | completed | failed | req/s | out tok/s | goodput req/s | saturation |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for s in &self.stages {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {} | {} | {:.2} | {:.2} | {} | {} |",
                s.stage,
                num(s.target_rate, 2),
                s.duration_s,
                s.completed,
                s.failed,
                s.request_throughput,
                s.output_throughput,
                num(s.goodput, 2),
                s.saturation.verdict.as_str()
            );
        }
        for s in &self.stages {
            let _ = writeln!(o, "\n## {}\n", s.stage);
            let _ = write!(o, "| latency (ms) | mean |");
            for p in &self.percentiles {
                let _ = write!(o, " {} |", p_label(*p));
            }
            let _ = writeln!(o);
            let _ = write!(o, "|---|---:|");
            for _ in &self.percentiles {
                let _ = write!(o, "---:|");
            }
            let _ = writeln!(o);
            for (key, name) in TABLE_METRICS {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                let _ = write!(o, "| {name} | {} |", num(d.mean, 2));
                for p in &self.percentiles {
                    let _ = write!(o, " {} |", num(d.pct(*p), 2));
                }
                let _ = writeln!(o);
            }
            let _ = writeln!(
                o,
                "\nSaturation: **{}**: {}",
                s.saturation.verdict.as_str(),
                s.saturation.reason
            );
            for e in evidence(&s.saturation) {
                let _ = writeln!(o, "- {e}");
            }
        }
        let _ = writeln!(o, "\n**Run:** {}", self.saturation.summary);
        for w in &self.warnings {
            let _ = writeln!(o, "\n> warning: {w}");
        }
        o
    }

    /// Long-format CSV: `stage,metric,stat,value`, one row per number.
    pub fn to_csv(&self) -> String {
        let mut o = String::from("stage,metric,stat,value\n");
        let q = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        for s in &self.stages {
            let st = q(&s.stage);
            let mut row = |m: &str, stat: &str, v: Option<f64>| {
                let _ = writeln!(
                    o,
                    "{st},{m},{stat},{}",
                    v.map_or(String::new(), |x| format!("{x}"))
                );
            };
            row("stage", "target_rate", s.target_rate);
            row("stage", "duration_s", Some(s.duration_s));
            row("stage", "requests", Some(s.requests as f64));
            row("stage", "completed", Some(s.completed as f64));
            row("stage", "failed", Some(s.failed as f64));
            row(
                "stage",
                "total_input_tokens",
                Some(s.total_input_tokens as f64),
            );
            row(
                "stage",
                "total_output_tokens",
                Some(s.total_output_tokens as f64),
            );
            row("stage", "request_throughput", Some(s.request_throughput));
            row("stage", "input_throughput", Some(s.input_throughput));
            row("stage", "output_throughput", Some(s.output_throughput));
            row("stage", "goodput", s.goodput);
            row(
                "stage",
                "saturated",
                Some(f64::from(u8::from(
                    s.saturation.verdict == crate::saturation::Verdict::Saturated,
                ))),
            );
            for key in METRIC_NAMES {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                row(key, "count", Some(d.count as f64));
                row(key, "mean", d.mean);
                row(key, "std", d.std);
                for (p, v) in &d.percentiles {
                    row(key, &p_label(*p), *v);
                }
            }
        }
        o
    }
}
