//! Saturation: is an open-loop stage stable, or does its backlog grow without bound? And the
//! run's saturation rate. Algorithms: reference/traces-engines-saturation.md section 6.5 A and E;
//! the decisions behind the rule are in docs/saturation.md.
//!
//! A stage is tested only over its **steady window**: arrivals after the first
//! max([`WARMUP_FRACTION`] of the arrival span, the median E2E capped at half the span). A
//! stable engine's backlog takes about one E2E to fill, so trends inside that ramp are the ramp,
//! not a queue. A stage whose window is shorter than one service time (the 5th percentile of
//! E2E, a request that barely waited), or holds fewer than [`MIN_POINTS`] requests, is
//! `insufficient`: it never reached steady state, and no verdict would mean anything.
//!
//! It is **saturated** when a latency series and the backlog both grow in that window:
//! - TTFT (from the scheduled time) or TPOT trends up over arrival time: an OLS slope whose 95%
//!   t-CI lies above zero and a projected rise over the window above 20% of the series' median,
//!   1 ms, and twice the scatter around the fitted line, confirmed by Mann-Kendall (Z > 1.96)
//!   unless the evidence is overwhelming on its own: even the CI's lower end projects a
//!   practical rise. TTFT catches engines that queue before admission (vLLM, SGLang); TPOT
//!   catches engines that admit everything and slow every step (some continuous batchers).
//! - the backlog (requests scheduled and not yet finished) grows significantly, by more than one
//!   request, 20% of its mean and twice its scatter over the window; or completions in the window
//!   fall below 90% of the arrivals in it.
//!
//! Requiring both is the GuideLLM over-saturation rule (concurrency and TTFT slopes); it keeps a
//! noisy latency trend in a short stage from being called a queue blow-up. But plain arithmetic
//! wins over a weak test: when completions are under half the arrivals and the backlog grows,
//! the stage is saturated whatever the latency tests say (an engine that admits queued requests
//! in waves, like llama.cpp's slots, raises TTFT in steps that a short window's rank test can
//! miss; and in a saturated stage few requests complete, so the latency series is short).

use serde::Serialize;

use crate::load::{ServerPoint, StageData};
use trace_stats::{MannKendall, Slope, mann_kendall, ols, percentiles_in_place};

/// How the reason of a stage whose requests all arrived at once begins.
const ALL_AT_ONCE: &str = "every request arrived at once";

/// Fraction of a stage's arrival span always dropped as warm-up before the trend tests.
pub const WARMUP_FRACTION: f64 = 0.15;
/// A latency rise must exceed this fraction of the series' median...
pub const PRACTICAL_FRACTION: f64 = 0.2;
/// ... and this many ms.
pub const PRACTICAL_MIN_MS: f64 = 1.0;
/// A rise must exceed this many residual standard deviations: a queue that grows stands out
/// of its own scatter, while a stable queue's bursts (waits in a queue are strongly
/// autocorrelated, which inflates OLS and Mann-Kendall significance) do not.
pub const NOISE_MULTIPLE: f64 = 2.0;
/// Completions below this fraction of arrivals in the window count as falling behind.
pub const COMPLETION_FLOOR: f64 = 0.9;
/// Completions below this fraction of arrivals, with a growing backlog, are an overload no
/// latency test can veto.
pub const OVERLOAD_RATIO: f64 = 0.5;
/// Fewest requests in the steady window for a verdict.
pub const MIN_POINTS: usize = 10;
/// Backlog samples taken across the steady window.
const BACKLOG_SAMPLES: usize = 200;

/// Verdict of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No growing latency and backlog in the steady window.
    Stable,
    /// The backlog grows and latency with it.
    Saturated,
    /// Too short, or too few completed requests, to test.
    Insufficient,
    /// More than [`FAILURE_BOUND`] of its requests failed: the engine was not serving, so its
    /// latency and throughput are no capacity, whatever their trends.
    Failing,
}

impl Verdict {
    /// Lowercase word used in every rendering.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stable => "stable",
            Verdict::Saturated => "saturated",
            Verdict::Insufficient => "insufficient data",
            Verdict::Failing => "failing",
        }
    }
}

/// A latency series' trend over arrival time in the steady window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    /// OLS slope of the latency (s) over arrival time (s), with its 95% CI.
    pub slope: Slope,
    /// Mann-Kendall on the series ordered by arrival.
    pub mann_kendall: Option<MannKendall>,
    /// Projected rise over the window, ms (slope x window).
    pub rise_ms: f64,
    /// The series' median in the window, ms.
    pub median_ms: f64,
    /// Standard deviation of the residuals around the fitted line, ms.
    pub residual_sd_ms: f64,
}

impl Trend {
    /// The smallest rise that counts: 20% of the median, twice the scatter around the trend,
    /// and 1 ms.
    fn practical_ms(&self) -> f64 {
        (PRACTICAL_FRACTION * self.median_ms)
            .max(NOISE_MULTIPLE * self.residual_sd_ms)
            .max(PRACTICAL_MIN_MS)
    }

    /// Significant (CI above zero) and practical (the rise exceeds [`Trend::practical_ms`]),
    /// with Mann-Kendall agreeing, or [`Trend::overwhelming`] on its own.
    pub fn growing(&self) -> bool {
        self.slope.significant_up()
            && self.rise_ms > self.practical_ms()
            && (self.mann_kendall.is_none_or(|m| m.z > 1.96) || self.overwhelming())
    }

    /// Even the lower end of the slope's 95% CI projects a practical rise over the window: a
    /// rank test on a short series cannot outweigh that.
    pub fn overwhelming(&self) -> bool {
        self.rise_ms > 0.0
            && self.slope.slope > 0.0
            && self.slope.ci_low / self.slope.slope * self.rise_ms > self.practical_ms()
    }
}

/// The evidence behind a stage's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSaturation {
    /// The verdict.
    pub verdict: Verdict,
    /// Why: the series that grew, or why the stage could not be judged.
    pub reason: String,
    /// Offered rate, req/s: the target rate, else arrivals over the arrival span.
    pub offered_rate: Option<f64>,
    /// Service-time estimate: the 5th percentile of E2E (from the scheduled time), s.
    pub service_time_s: Option<f64>,
    /// Steady window tested, s from the stage's first arrival: (start, end).
    pub window_s: Option<(f64, f64)>,
    /// Completions per second inside the steady window.
    pub completion_rate: Option<f64>,
    /// Completions / arrivals inside the steady window (near 1 when keeping up).
    pub completion_ratio: Option<f64>,
    /// From the stage's last arrival to its last stream end, s: a stage that kept up drains in
    /// about one E2E (its last request did not wait); a queue left behind takes longer.
    pub drain_s: Option<f64>,
    /// Median E2E from the scheduled time, s (what `drain_s` is measured against).
    pub median_e2e_s: Option<f64>,
    /// TTFT from the scheduled time over arrival time (s/s).
    pub ttft: Option<Trend>,
    /// TPOT over arrival time (s/s).
    pub tpot: Option<Trend>,
    /// Backlog (scheduled, not finished) over time, requests per s.
    pub backlog_slope: Option<Slope>,
    /// Mean backlog in the window, requests.
    pub backlog_mean: Option<f64>,
    /// OLS slope of send lag (s) over arrival time (s): the client falling behind.
    pub send_lag_slope: Option<Slope>,
    /// OLS slope of the server's waiting queue (requests per s) over the steady window.
    pub server_queue_slope: Option<Slope>,
    /// Saturated stages: the completion rate in the window (it tends to the capacity mu), else
    /// the fluid estimate lambda / (1 + TTFT slope).
    pub capacity_estimate: Option<f64>,
}

fn trend(points: &[(f64, f64)]) -> Option<Trend> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if pts.len() < MIN_POINTS {
        return None;
    }
    let x: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let y: Vec<f64> = pts.iter().map(|p| p.1 / 1e3).collect();
    let slope = ols(&x, &y)?;
    let span = x.last().copied().unwrap_or(0.0) - x.first().copied().unwrap_or(0.0);
    let mut ms: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let median_ms = percentiles_in_place(&mut ms, &[50.0])[0].unwrap_or(0.0);
    Some(Trend {
        slope,
        mann_kendall: mann_kendall(&y, 500),
        rise_ms: slope.slope * span * 1e3,
        median_ms,
        residual_sd_ms: residual_sd(&x, &y, &slope) * 1e3,
    })
}

/// Scatter of `y` around the fitted line: sqrt(SSE / (n - 2)).
fn residual_sd(x: &[f64], y: &[f64], fit: &Slope) -> f64 {
    let sse: f64 = x
        .iter()
        .zip(y)
        .map(|(x, y)| (y - fit.intercept - fit.slope * x).powi(2))
        .sum();
    (sse / (x.len().saturating_sub(2).max(1)) as f64).sqrt()
}

/// Requests scheduled at or before `t` and not finished by `t`, sampled across `[a, b]` (s).
fn backlog(s: &StageData, a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
    let mut starts: Vec<f64> = s.rows.iter().map(|r| r.scheduled_ns as f64 / 1e9).collect();
    let mut ends: Vec<f64> = s
        .rows
        .iter()
        .map(|r| {
            if r.end_ns == i64::MIN {
                f64::INFINITY
            } else {
                r.end_ns as f64 / 1e9
            }
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    ends.sort_by(f64::total_cmp);
    let (mut i, mut j) = (0, 0);
    let mut xs = Vec::with_capacity(BACKLOG_SAMPLES);
    let mut ys = Vec::with_capacity(BACKLOG_SAMPLES);
    for k in 0..BACKLOG_SAMPLES {
        let t = a + (b - a) * k as f64 / (BACKLOG_SAMPLES - 1) as f64;
        while i < starts.len() && starts[i] <= t {
            i += 1;
        }
        while j < ends.len() && ends[j] <= t {
            j += 1;
        }
        xs.push(t);
        ys.push(i.saturating_sub(j) as f64);
    }
    (xs, ys)
}

/// A stage where more than this fraction of requests failed is `failing`.
pub const FAILURE_BOUND: f64 = 0.10;

/// Tests one stage: the latency and backlog trends, then failures (a dead server's fast errors
/// look like a stable engine).
pub fn stage_saturation(s: &StageData, server: &[ServerPoint]) -> StageSaturation {
    let mut out = latency_saturation(s, server);
    let failed = s.rows.iter().filter(|r| !r.ok).count();
    // A queue that makes clients time out is saturation, the stronger statement; failing
    // replaces only a verdict that would call the stage serving (or leave it unjudged).
    if out.verdict != Verdict::Saturated
        && !s.rows.is_empty()
        && failed as f64 > FAILURE_BOUND * s.rows.len() as f64
    {
        out.verdict = Verdict::Failing;
        out.reason = format!(
            "{failed} of {} requests failed ({:.0}%, above the {:.0}% bound): the engine was not \
             serving this load, so its latency and throughput are no capacity",
            s.rows.len(),
            100.0 * failed as f64 / s.rows.len() as f64,
            100.0 * FAILURE_BOUND
        );
        out.capacity_estimate = None;
    }
    out
}

/// The latency and backlog test of one stage.
fn latency_saturation(s: &StageData, server: &[ServerPoint]) -> StageSaturation {
    let offered_rate = s.target_rate.filter(|r| r.is_finite()).or_else(|| {
        let (lo, hi) = s.rows.iter().fold((i64::MAX, i64::MIN), |(a, b), r| {
            (a.min(r.scheduled_ns), b.max(r.scheduled_ns))
        });
        (s.rows.len() > 1 && hi > lo).then(|| (s.rows.len() - 1) as f64 / ((hi - lo) as f64 / 1e9))
    });
    let mut out = StageSaturation {
        verdict: Verdict::Insufficient,
        reason: String::new(),
        offered_rate,
        service_time_s: None,
        window_s: None,
        completion_rate: None,
        completion_ratio: None,
        drain_s: None,
        median_e2e_s: None,
        ttft: None,
        tpot: None,
        backlog_slope: None,
        backlog_mean: None,
        send_lag_slope: None,
        server_queue_slope: None,
        capacity_estimate: None,
    };
    let mut e2e: Vec<f64> = s
        .rows
        .iter()
        .filter(|r| r.ok && r.e2e_sched_ms.is_finite())
        .map(|r| r.e2e_sched_ms / 1e3)
        .collect();
    let [Some(service), Some(median_e2e)] = percentiles_in_place(&mut e2e, &[5.0, 50.0])[..] else {
        out.reason = "no completed request".into();
        return out;
    };
    out.service_time_s = Some(service);
    out.median_e2e_s = Some(median_e2e);
    let Some(first) = s.start_ns() else {
        return out;
    };
    let last = s.rows.iter().map(|r| r.scheduled_ns).max().unwrap_or(first);
    out.drain_s = s.end_ns().map(|e| (e - last).max(0) as f64 / 1e9);
    let t0 = first as f64 / 1e9;
    let span = (last - first) as f64 / 1e9;
    // The backlog of a stable engine fills within about one E2E; a saturated stage's median
    // E2E is inflated by its queue, so the ramp never takes more than half the span.
    let ramp = median_e2e.min(0.5 * span);
    let cut = t0 + (WARMUP_FRACTION * span).max(ramp);
    let t1 = t0 + span;
    let kept: Vec<_> = s
        .rows
        .iter()
        .filter(|r| r.scheduled_ns as f64 / 1e9 >= cut)
        .collect();
    let kept_ok = kept.iter().filter(|r| r.ok).count();
    if span <= 0.0 {
        out.reason = format!(
            "{ALL_AT_ONCE} (rate inf, a closed-loop stage): an open-loop stage's saturation test \
             does not apply; compare throughput and latency across stages"
        );
        return out;
    }
    if t1 - cut < service || kept_ok < MIN_POINTS {
        out.reason = format!(
            "too short to judge: arrivals span {span:.1} s and one request takes ~{service:.1} s, \
             so the steady window is {:.1} s with {kept_ok} completed requests; give the stage \
             more requests (-n)",
            (t1 - cut).max(0.0)
        );
        return out;
    }
    out.window_s = Some((cut - t0, span));
    // The server's waiting queue over the same window as the other evidence: the drain after
    // the last arrival would pull its slope down.
    let q: Vec<(f64, f64)> = server
        .iter()
        .map(|p| (p.t_ns as f64 / 1e9, p.waiting))
        .filter(|p| (cut..=t1).contains(&p.0))
        .filter_map(|(t, w)| Some((t, w?)))
        .collect();
    let (qx, qy): (Vec<f64>, Vec<f64>) = q.into_iter().unzip();
    out.server_queue_slope = ols(&qx, &qy);
    let arrivals = kept.len() as f64;
    // Completions are requests that finished successfully: a timed-out request left the
    // system, but the engine did not serve it.
    let completions = s
        .rows
        .iter()
        .filter(|r| r.ok && r.end_ns != i64::MIN)
        .filter(|r| (cut..=t1).contains(&(r.end_ns as f64 / 1e9)))
        .count() as f64;
    out.completion_rate = Some(completions / (t1 - cut));
    out.completion_ratio = (arrivals > 0.0).then(|| completions / arrivals);

    let mut by_arrival: Vec<_> = kept.iter().filter(|r| r.ok).collect();
    by_arrival.sort_by_key(|r| r.scheduled_ns);
    let series = |f: &dyn Fn(&crate::load::ReqRow) -> f64| -> Vec<(f64, f64)> {
        by_arrival
            .iter()
            .map(|r| (r.scheduled_ns as f64 / 1e9, f(r)))
            .collect()
    };
    out.ttft = trend(&series(&|r| r.ttft_sched_ms));
    out.tpot = trend(&series(&|r| r.tpot_ms));
    let lag = series(&|r| r.send_lag_ms / 1e3);
    let (lx, ly): (Vec<f64>, Vec<f64>) = lag.into_iter().filter(|p| p.1.is_finite()).unzip();
    out.send_lag_slope = ols(&lx, &ly);
    let (bx, by) = backlog(s, cut, t1);
    let mean = by.iter().sum::<f64>() / by.len().max(1) as f64;
    out.backlog_mean = Some(mean);
    out.backlog_slope = ols(&bx, &by);

    let ttft_up = out.ttft.is_some_and(|t| t.growing());
    let tpot_up = out.tpot.is_some_and(|t| t.growing());
    let backlog_up = out.backlog_slope.is_some_and(|b| {
        let rise = b.slope * (t1 - cut);
        b.significant_up()
            && rise > 1.0
            && rise > PRACTICAL_FRACTION * mean
            && rise > NOISE_MULTIPLE * residual_sd(&bx, &by, &b)
    });
    let behind = out.completion_ratio.is_some_and(|c| c < COMPLETION_FLOOR);
    let overload = backlog_up && out.completion_ratio.is_some_and(|c| c < OVERLOAD_RATIO);
    let latency = match (ttft_up, tpot_up) {
        (true, true) => Some("TTFT and TPOT grow"),
        (true, false) => Some("TTFT grows"),
        (false, true) => Some("TPOT grows"),
        (false, false) => None,
    };
    let queue = match (backlog_up, behind) {
        (true, true) => Some("the backlog grows and completions fall behind arrivals"),
        (true, false) => Some("the backlog grows"),
        (false, true) => Some("completions fall behind arrivals"),
        (false, false) => None,
    };
    (out.verdict, out.reason) = match (latency, queue) {
        (Some(l), Some(q)) => (Verdict::Saturated, format!("{l} and {q}")),
        (None, Some(_)) if overload => (
            Verdict::Saturated,
            format!(
                "completions are {:.0}% of arrivals and the backlog grows by {:.2} req/s: an \
                 overload, whatever the latency trend tests say",
                100.0 * out.completion_ratio.unwrap_or(0.0),
                out.backlog_slope.map_or(0.0, |b| b.slope)
            ),
        ),
        (Some(l), None) => (
            Verdict::Stable,
            format!("{l}, but the backlog does not: a latency drift, not a queue"),
        ),
        // Queue signs without a latency trend: the arithmetic of the stage's end decides. A
        // stage that kept up drains within one E2E of its last arrival (its last request did
        // not wait); one that left a queue behind takes longer to empty it.
        (None, Some(q)) => match out.drain_s {
            Some(d) if d <= median_e2e => (
                Verdict::Stable,
                format!(
                    "{q} inside the window, but latency does not grow and the stage drained \
                     {d:.1} s after its last arrival, within one median E2E ({median_e2e:.1} s): \
                     no queue was left"
                ),
            ),
            Some(d) if backlog_up && behind => (
                Verdict::Saturated,
                format!(
                    "{q}, and the stage took {d:.1} s to drain after its last arrival, {:.1}x \
                     the median E2E: a queue was left behind, whatever the latency trend tests \
                     say",
                    d / median_e2e.max(f64::MIN_POSITIVE)
                ),
            ),
            _ => (Verdict::Stable, format!("{q}, but latency does not grow")),
        },
        (None, None) => {
            // Say when a trend was significant but too small to matter, so a reader who sees
            // its CI above zero in the evidence knows why it did not count.
            let faint: Vec<&str> = [("TTFT", out.ttft), ("TPOT", out.tpot)]
                .iter()
                .filter(|(_, t)| t.is_some_and(|t| t.slope.significant_up()))
                .map(|(n, _)| *n)
                .collect();
            let reason = if faint.is_empty() {
                "no growing latency or backlog".to_string()
            } else {
                format!(
                    "no growing backlog, and the upward {} trend is within the stage's scatter",
                    faint.join(" and ")
                )
            };
            (Verdict::Stable, reason)
        }
    };
    if out.verdict == Verdict::Saturated {
        out.capacity_estimate = out.completion_rate.filter(|c| *c > 0.0).or_else(|| {
            let s = out.ttft.map_or(0.0, |t| t.slope.slope.max(0.0));
            offered_rate.map(|l| l / (1.0 + s))
        });
    }
    out
}

/// The run's saturation summary across stages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSaturation {
    /// The lowest-rate saturated stage.
    pub saturated_stage: Option<String>,
    /// Its offered rate, req/s: the saturation rate.
    pub saturation_rate: Option<f64>,
    /// The stable stage with the highest request throughput below the saturation rate.
    pub best_stable_stage: Option<String>,
    /// Its request throughput, req/s.
    pub max_stable_throughput: Option<f64>,
    /// Capacity estimate mu from the lowest saturated stage, req/s.
    pub capacity_estimate: Option<f64>,
    /// Stages that could not be judged.
    pub insufficient_stages: Vec<String>,
    /// Stages where the engine failed too many requests to be judged as serving.
    pub failing_stages: Vec<String>,
    /// Stable stages offered more than the saturation rate: the sweep is not monotone, so the
    /// saturation rate is uncertain (noise, or a stage too short to show its queue).
    pub stable_above: Vec<String>,
    /// One sentence for humans.
    pub summary: String,
}

/// Summarises per-stage verdicts: `(label, verdict, request throughput)` in sweep order.
pub fn run_saturation(stages: &[(String, &StageSaturation, f64)]) -> RunSaturation {
    let rate = |s: &(String, &StageSaturation, f64)| s.1.offered_rate.unwrap_or(f64::INFINITY);
    let low = stages
        .iter()
        .filter(|s| s.1.verdict == Verdict::Saturated)
        .min_by(|a, b| rate(a).total_cmp(&rate(b)));
    let sat_rate = low.map_or(f64::INFINITY, rate);
    let stable = || stages.iter().filter(|s| s.1.verdict == Verdict::Stable);
    let best = stable()
        .filter(|s| low.is_none() || rate(s) < sat_rate)
        .max_by(|a, b| a.2.total_cmp(&b.2));
    let stable_above: Vec<String> = stable()
        .filter(|s| low.is_some() && rate(s) > sat_rate)
        .map(|s| s.0.clone())
        .collect();
    // Stages whose requests all arrived at once (rate inf, a concurrency sweep) have no
    // open-loop verdict; the others were too short.
    let closed_loop = |s: &&(String, &StageSaturation, f64)| {
        s.1.verdict == Verdict::Insufficient && s.1.reason.starts_with(ALL_AT_ONCE)
    };
    let closed: Vec<String> = stages
        .iter()
        .filter(closed_loop)
        .map(|s| s.0.clone())
        .collect();
    let insufficient: Vec<String> = stages
        .iter()
        .filter(|s| s.1.verdict == Verdict::Insufficient && !closed_loop(s))
        .map(|s| s.0.clone())
        .collect();
    let failing: Vec<String> = stages
        .iter()
        .filter(|s| s.1.verdict == Verdict::Failing)
        .map(|s| s.0.clone())
        .collect();
    let capacity = |l: &(String, &StageSaturation, f64)| {
        l.1.capacity_estimate.map_or(String::new(), |m| {
            format!("; capacity estimate {m:.2} req/s")
        })
    };
    let mut summary = match (low, best) {
        (Some(l), Some(b)) => format!(
            "saturates at {} ({}); highest stable throughput below it {:.2} req/s at {}{}",
            l.0,
            fmt_rate(l.1.offered_rate),
            b.2,
            b.0,
            capacity(l)
        ),
        (Some(l), None) => format!(
            "saturated from the lowest judged stage, {} ({}){}",
            l.0,
            fmt_rate(l.1.offered_rate),
            capacity(l)
        ),
        (None, Some(b)) => format!(
            "no stage saturated; highest stable throughput {:.2} req/s at {}",
            b.2, b.0
        ),
        (None, None) if !closed.is_empty() && insufficient.is_empty() => format!(
            "closed-loop stages ({}): no open-loop saturation verdict; compare their throughput \
             and latency",
            closed.join(", ")
        ),
        (None, None) => "no stage could be judged".to_string(),
    };
    if !stable_above.is_empty() {
        summary.push_str(&format!(
            "; but {} stable above it, so the saturation rate is uncertain",
            list(&stable_above)
        ));
    }
    if !insufficient.is_empty() {
        summary.push_str(&format!("; {} too short to judge", list(&insufficient)));
    }
    if !failing.is_empty() {
        summary.push_str(&format!(
            "; {} failing (over {:.0}% of requests failed)",
            list(&failing),
            100.0 * FAILURE_BOUND
        ));
    }
    RunSaturation {
        saturated_stage: low.map(|l| l.0.clone()),
        saturation_rate: low.and_then(|l| l.1.offered_rate),
        best_stable_stage: best.map(|b| b.0.clone()),
        max_stable_throughput: best.map(|b| b.2),
        capacity_estimate: low.and_then(|l| l.1.capacity_estimate),
        insufficient_stages: insufficient,
        failing_stages: failing,
        stable_above,
        summary,
    }
}

fn list(v: &[String]) -> String {
    let verb = if v.len() == 1 { "is" } else { "are" };
    format!("{} {verb}", v.join(", "))
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("rate unknown".into(), |r| format!("offered {r:.2} req/s"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::ReqRow;

    /// A completed request sent at `t` s with the given TTFT and TPOT over `out` tokens.
    fn row(t: f64, ttft_ms: f64, tpot_ms: f64, out: u32) -> ReqRow {
        let e2e = ttft_ms + tpot_ms * f64::from(out - 1);
        let sched = (t * 1e9) as i64;
        ReqRow {
            scheduled_ns: sched,
            ok: true,
            send_lag_ms: 0.1,
            ttft_ms,
            ttft_sched_ms: ttft_ms,
            tpot_ms,
            e2e_ms: e2e,
            e2e_sched_ms: e2e,
            end_ns: sched + (e2e * 1e6) as i64,
            input_tokens: 100,
            output_tokens: out,
            queue_wait_ms: f64::NAN,
            prompt_error: f32::NAN,
            token_gap: 0,
            ttfa_ms: ttft_ms,
            reasoning_tokens: 0,
            reasoning: false,
            cached_tokens: None,
            turn: None,
            session: None,
        }
    }

    fn stage(rate: f64, rows: Vec<ReqRow>) -> StageData {
        StageData {
            label: format!("rate={rate}"),
            target_rate: Some(rate),
            rows,
            ..Default::default()
        }
    }

    // Deterministic jitter so slopes have residuals.
    fn jitter(i: usize) -> f64 {
        [0.0, 3.0, -2.0, 1.0, -1.5, 2.5, -3.0][i % 7]
    }

    /// A server that died mid-stage: fast errors after a stable start. Its throughput is no
    /// capacity, whatever the latency of the few that completed.
    #[test]
    fn a_stage_where_most_requests_failed_is_failing_never_stable() {
        let rows: Vec<ReqRow> = (0..200)
            .map(|i| {
                let mut r = row(i as f64 / 10.0, 100.0 + jitter(i), 20.0, 64);
                r.ok = i < 44;
                r
            })
            .collect();
        let s = stage_saturation(&stage(10.0, rows.clone()), &[]);
        assert_eq!(s.verdict, Verdict::Failing, "{s:?}");
        assert!(
            s.reason.starts_with("156 of 200 requests failed"),
            "{}",
            s.reason
        );
        let ok = stage_saturation(&stage(1.0, rows[..40].to_vec()), &[]);
        let run = run_saturation(&[
            ("rate=1".to_string(), &ok, 1.0),
            ("rate=10".to_string(), &s, 2.2),
        ]);
        assert_eq!(run.failing_stages, vec!["rate=10".to_string()]);
        assert_ne!(run.best_stable_stage.as_deref(), Some("rate=10"));
        assert!(
            run.summary.contains("rate=10 is failing"),
            "{}",
            run.summary
        );
    }

    #[test]
    fn admit_all_engine_that_slows_every_step_is_saturated_by_tpot() {
        // TTFT flat; TPOT grows with the batch, so completions fall behind arrivals.
        let rows = (0..300)
            .map(|i| {
                let t = i as f64 / 10.0;
                row(t, 100.0 + jitter(i), 20.0 + 4.0 * t + jitter(i), 64)
            })
            .collect();
        let s = stage_saturation(&stage(10.0, rows), &[]);
        assert_eq!(s.verdict, Verdict::Saturated, "{s:?}");
        assert!(!s.ttft.unwrap().growing());
        assert!(s.tpot.unwrap().growing());
        assert!(s.backlog_slope.unwrap().significant_up());
        assert!(s.reason.starts_with("TPOT grows"), "{}", s.reason);
        assert!(s.completion_ratio.unwrap() < COMPLETION_FLOOR);
        assert!(s.capacity_estimate.unwrap() < 10.0);
    }

    #[test]
    fn a_stage_shorter_than_its_service_time_is_insufficient() {
        // 60 requests in 3.75 s, each taking ~5.5 s: the backlog is still filling at the end.
        let rows = (0..60)
            .map(|i| row(i as f64 / 16.0, 130.0 + jitter(i), 85.0, 64))
            .collect();
        let s = stage_saturation(&stage(16.0, rows), &[]);
        assert_eq!(s.verdict, Verdict::Insufficient, "{s:?}");
        assert!(s.reason.contains("too short"), "{}", s.reason);
        assert!(s.window_s.is_none());
    }

    #[test]
    fn the_ramp_is_not_a_queue() {
        // TPOT rises while the batch fills (about one E2E, 6 s, longer than 15% of the 30 s
        // span), then holds: stable.
        let rows = (0..300)
            .map(|i| {
                let t = i as f64 / 10.0;
                let fill = (t / 6.0).min(1.0);
                row(
                    t,
                    50.0 + jitter(i),
                    60.0 + 40.0 * fill + jitter(i) / 10.0,
                    64,
                )
            })
            .collect();
        let s = stage_saturation(&stage(10.0, rows), &[]);
        assert_eq!(s.verdict, Verdict::Stable, "{s:?}");
        let (a, _) = s.window_s.unwrap();
        assert!(a >= 6.0, "{s:?}");
        assert!((s.completion_ratio.unwrap() - 1.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn latency_drift_without_a_backlog_is_stable() {
        // Requests get slower over time but never overlap (1 req/s, 200 ms each): no queue.
        let rows = (0..60)
            .map(|i| {
                let t = i as f64;
                row(t, 50.0 + 2.0 * t + jitter(i), 2.0, 64)
            })
            .collect();
        let s = stage_saturation(&stage(1.0, rows), &[]);
        assert!(s.ttft.unwrap().growing(), "{s:?}");
        assert_eq!(s.verdict, Verdict::Stable, "{s:?}");
        assert!(s.reason.contains("not a queue"), "{}", s.reason);
    }

    /// A stage like the CPU llama.cpp one of issue 15: 2 req/s offered to an engine that
    /// serves a fraction of that. In the steady window (the second half of the arrivals) most
    /// requests wait past the client's timeout and fail, so only a few complete: their TTFTs
    /// (admitted in waves as slots free up) form a short sawtooth with no significant trend,
    /// while completions are a fraction of arrivals and the backlog grows.
    fn overloaded_with_a_short_latency_series() -> StageData {
        let rows = (0..120)
            .map(|i| {
                let t = i as f64 / 2.0;
                if i % 5 == 0 {
                    // A wave admits a few requests; later arrivals in a wave wait less.
                    let ttft = 30_000.0 + [0.0, 6_000.0, -4_000.0, 3_000.0][(i / 5) % 4];
                    return row(t, ttft, 8.0, 125);
                }
                // The rest wait past the client's 60 s timeout.
                let mut r = row(t, 1.0, 1.0, 2);
                r.ok = false;
                r.end_ns = r.scheduled_ns + 60_000_000_000;
                r
            })
            .collect();
        stage(2.0, rows)
    }

    #[test]
    fn an_overload_plain_arithmetic_shows_is_saturated_whatever_the_latency_tests_say() {
        let st = overloaded_with_a_short_latency_series();
        let s = stage_saturation(&st, &[]);
        assert_eq!(s.verdict, Verdict::Saturated, "{s:?}");
        assert!(
            !s.ttft.unwrap().growing(),
            "the latency test alone says no: {s:?}"
        );
        let ratio = s.completion_ratio.unwrap();
        assert!(ratio < OVERLOAD_RATIO, "{s:?}");
        assert!(s.backlog_slope.unwrap().significant_up(), "{s:?}");
        assert!(s.reason.contains("overload"), "{}", s.reason);
        // Plain arithmetic on the same rows: fewer than half the window's arrivals completed.
        let (a, b) = s.window_s.unwrap();
        let arrived = st
            .rows
            .iter()
            .filter(|r| (a..=b).contains(&(r.scheduled_ns as f64 / 1e9)))
            .count() as f64;
        assert!(
            s.completion_rate.unwrap() * (b - a) < arrived / 2.0,
            "{s:?}"
        );
    }

    #[test]
    fn a_queue_left_behind_is_saturated_though_ttft_and_tpot_stay_flat() {
        // An admit-all engine whose requests take longer and longer (their outputs grow, each
        // step as fast as before): TTFT and TPOT are flat, but requests pile up, and the last
        // one ends long after a typical request would have.
        let rows = (0..120)
            .map(|i| {
                let t = i as f64 / 2.0;
                row(t, 50.0 + jitter(i), 10.0, 10 + 10 * i as u32)
            })
            .collect();
        let st = stage(2.0, rows);
        let s = stage_saturation(&st, &[]);
        assert!(
            !s.ttft.unwrap().growing() && !s.tpot.unwrap().growing(),
            "{s:?}"
        );
        let ratio = s.completion_ratio.unwrap();
        assert!((OVERLOAD_RATIO..COMPLETION_FLOOR).contains(&ratio), "{s:?}");
        assert_eq!(s.verdict, Verdict::Saturated, "{s:?}");
        assert!(s.reason.contains("a queue was left behind"), "{}", s.reason);
        // The arithmetic: the stage drained in more than one median E2E.
        let (d, m) = (s.drain_s.unwrap(), s.median_e2e_s.unwrap());
        let last_arrival = st.rows.iter().map(|r| r.scheduled_ns).max().unwrap();
        assert_eq!(d, (st.end_ns().unwrap() - last_arrival) as f64 / 1e9);
        assert!(d > m, "{d} {m}");
    }

    #[test]
    fn an_overwhelming_slope_is_not_vetoed_by_a_weak_rank_test() {
        // A short sawtooth: OLS is decisive (even its CI's low end rises a lot), while
        // Mann-Kendall, counting the falls inside each wave, stays under 1.96.
        let points: Vec<(f64, f64)> = (0..11)
            .map(|i| {
                let y_s = 10.0 + (i / 4) as f64 * 8.0 - (i % 4) as f64 * 0.5;
                (i as f64 * 0.5, y_s * 1e3)
            })
            .collect();
        let t = trend(&points).unwrap();
        assert!(t.mann_kendall.unwrap().z < 1.96, "{t:?}");
        assert!(t.overwhelming() && t.growing(), "{t:?}");
    }

    #[test]
    fn the_server_queue_is_fitted_over_the_steady_window_not_the_drain() {
        let st = overloaded_with_a_short_latency_series();
        // The gauge rises while requests arrive and drains after the last one.
        let last = st.rows.iter().map(|r| r.scheduled_ns).max().unwrap();
        let server: Vec<ServerPoint> = (0..200)
            .map(|k| {
                let t_ns = k * 500_000_000;
                let waiting = if t_ns <= last {
                    t_ns as f64 / 1e9 * 1.5
                } else {
                    (last as f64 / 1e9 * 1.5 - (t_ns - last) as f64 / 1e9 * 0.44).max(0.0)
                };
                ServerPoint {
                    t_ns,
                    waiting: Some(waiting),
                    running: Some(4.0),
                    kv_usage: None,
                    prefix_queries: None,
                    prefix_hits: None,
                }
            })
            .collect();
        let s = stage_saturation(&st, &server);
        let q = s.server_queue_slope.unwrap();
        assert!((q.slope - 1.5).abs() < 0.01, "{q:?}");
    }

    fn verdict(v: Verdict, rate: f64) -> StageSaturation {
        let mut s = stage_saturation(&stage(rate, vec![]), &[]);
        s.verdict = v;
        s.offered_rate = Some(rate);
        s
    }

    #[test]
    fn run_summary_reports_a_non_monotone_sweep() {
        let (a, b, c, d) = (
            verdict(Verdict::Stable, 2.0),
            verdict(Verdict::Saturated, 4.0),
            verdict(Verdict::Stable, 8.0),
            verdict(Verdict::Insufficient, 16.0),
        );
        let stages = vec![
            ("rate=2".to_string(), &a, 1.9),
            ("rate=4".to_string(), &b, 3.1),
            ("rate=8".to_string(), &c, 7.5),
            ("rate=16".to_string(), &d, 8.0),
        ];
        let r = run_saturation(&stages);
        assert_eq!(r.saturated_stage.as_deref(), Some("rate=4"));
        // rate=8 is stable but above the saturation rate: not the best stable stage.
        assert_eq!(r.best_stable_stage.as_deref(), Some("rate=2"));
        assert_eq!(r.stable_above, vec!["rate=8".to_string()]);
        assert_eq!(r.insufficient_stages, vec!["rate=16".to_string()]);
        assert!(r.summary.contains("uncertain"), "{}", r.summary);
        assert!(r.summary.contains("rate=16 is too short"), "{}", r.summary);
    }
}
