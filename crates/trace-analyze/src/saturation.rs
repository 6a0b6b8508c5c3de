//! Saturation: is an open-loop stage stable, or does its queue grow without bound? And the run's
//! saturation rate. Algorithms: reference/traces-engines-saturation.md section 6.5 A and E.
//!
//! A stage is **saturated** when, after dropping the first [`WARMUP_FRACTION`] of its arrivals,
//! TTFT trends upward over arrival time with an OLS slope whose 95% t-CI lies above zero, the
//! Mann-Kendall test agrees (Z > 1.96), and the projected TTFT increase over the stage exceeds
//! both 20% of the median TTFT and 1 ms (a practical, not only statistical, trend). The other
//! series (completion rate vs arrival rate, send-lag slope, the server's waiting-queue slope)
//! are reported as evidence.

use serde::Serialize;

use crate::load::{ServerPoint, StageData};
use crate::stats::{MannKendall, Slope, mann_kendall, ols, percentiles_in_place};

/// Fraction of a stage's arrivals dropped as warm-up before the trend tests.
pub const WARMUP_FRACTION: f64 = 0.15;
/// The projected TTFT rise must exceed this fraction of the median TTFT.
pub const PRACTICAL_FRACTION: f64 = 0.2;
/// ... and this many ms.
pub const PRACTICAL_MIN_MS: f64 = 1.0;
const MIN_POINTS: usize = 10;

/// Verdict of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No significant upward trend.
    Stable,
    /// The queue grows: TTFT trends up significantly and practically.
    Saturated,
    /// Too few completed requests to test.
    Insufficient,
}

impl Verdict {
    /// Lowercase word used in every rendering.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stable => "stable",
            Verdict::Saturated => "saturated",
            Verdict::Insufficient => "insufficient data",
        }
    }
}

/// The evidence behind a stage's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSaturation {
    /// The verdict.
    pub verdict: Verdict,
    /// Offered rate, req/s: the target rate, else arrivals over the arrival span.
    pub offered_rate: Option<f64>,
    /// Completed requests per second over the stage span.
    pub completion_rate: Option<f64>,
    /// completion_rate / offered_rate (below ~0.95: completions fall behind arrivals).
    pub completion_ratio: Option<f64>,
    /// OLS slope of TTFT (s) over arrival time (s), dimensionless, after warm-up.
    pub ttft_slope: Option<Slope>,
    /// Mann-Kendall on TTFT ordered by arrival, after warm-up.
    pub ttft_mann_kendall: Option<MannKendall>,
    /// Projected TTFT rise over the tested span, ms (slope x span).
    pub ttft_rise_ms: Option<f64>,
    /// OLS slope of send lag (s) over arrival time (s): the client falling behind.
    pub send_lag_slope: Option<Slope>,
    /// OLS slope of the server's waiting queue (requests per s) over the stage.
    pub server_queue_slope: Option<Slope>,
    /// Capacity estimate mu = lambda / (1 + s) when saturated (fluid approximation), req/s.
    pub capacity_estimate: Option<f64>,
}

/// Tests one stage.
pub fn stage_saturation(s: &StageData, server: &[ServerPoint]) -> StageSaturation {
    let mut pts: Vec<(f64, f64, f64)> = s
        .rows
        .iter()
        .filter(|r| r.ok && r.ttft_ms.is_finite())
        .map(|r| {
            (
                r.scheduled_ns as f64 / 1e9,
                r.ttft_ms / 1e3,
                r.send_lag_ms / 1e3,
            )
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let completed = s.rows.iter().filter(|r| r.ok).count();
    let duration = s.duration_s();
    let offered_rate = s.target_rate.filter(|r| r.is_finite()).or_else(|| {
        let (lo, hi) = s.rows.iter().fold((i64::MAX, i64::MIN), |(a, b), r| {
            (a.min(r.scheduled_ns), b.max(r.scheduled_ns))
        });
        (s.rows.len() > 1 && hi > lo).then(|| (s.rows.len() - 1) as f64 / ((hi - lo) as f64 / 1e9))
    });
    let completion_rate = (duration > 0.0).then(|| completed as f64 / duration);
    let completion_ratio = match (completion_rate, offered_rate) {
        (Some(c), Some(o)) if o > 0.0 => Some(c / o),
        _ => None,
    };
    let skip = (pts.len() as f64 * WARMUP_FRACTION).floor() as usize;
    let kept = &pts[skip.min(pts.len())..];
    let mut out = StageSaturation {
        verdict: Verdict::Insufficient,
        offered_rate,
        completion_rate,
        completion_ratio,
        ttft_slope: None,
        ttft_mann_kendall: None,
        ttft_rise_ms: None,
        send_lag_slope: None,
        server_queue_slope: None,
        capacity_estimate: None,
    };
    if let (Some(a), Some(b)) = (s.start_ns(), s.end_ns()) {
        let q: Vec<(f64, f64)> = server
            .iter()
            .filter(|p| p.t_ns >= a && p.t_ns <= b)
            .filter_map(|p| Some((p.t_ns as f64 / 1e9, p.waiting?)))
            .collect();
        let (x, y): (Vec<f64>, Vec<f64>) = q.into_iter().unzip();
        out.server_queue_slope = ols(&x, &y);
    }
    if kept.len() < MIN_POINTS {
        return out;
    }
    let x: Vec<f64> = kept.iter().map(|p| p.0).collect();
    let y: Vec<f64> = kept.iter().map(|p| p.1).collect();
    let lag: Vec<f64> = kept.iter().map(|p| p.2).collect();
    out.ttft_slope = ols(&x, &y);
    out.ttft_mann_kendall = mann_kendall(&y, 500);
    out.send_lag_slope = ols(&x, &lag);
    let span = x.last().copied().unwrap_or(0.0) - x.first().copied().unwrap_or(0.0);
    let mut yy: Vec<f64> = y.iter().map(|v| v * 1e3).collect();
    let median_ms = percentiles_in_place(&mut yy, &[50.0])[0].unwrap_or(0.0);
    out.verdict = Verdict::Stable;
    if let Some(sl) = out.ttft_slope {
        let rise_ms = sl.slope * span * 1e3;
        out.ttft_rise_ms = Some(rise_ms);
        let mk_agrees = out.ttft_mann_kendall.is_none_or(|m| m.z > 1.96);
        if sl.significant_up()
            && mk_agrees
            && rise_ms > PRACTICAL_FRACTION * median_ms
            && rise_ms > PRACTICAL_MIN_MS
        {
            out.verdict = Verdict::Saturated;
            out.capacity_estimate = offered_rate.map(|l| l / (1.0 + sl.slope.max(0.0)));
        }
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
    /// The stable stage with the highest request throughput.
    pub best_stable_stage: Option<String>,
    /// Its request throughput, req/s.
    pub max_stable_throughput: Option<f64>,
    /// Capacity estimate mu from the lowest saturated stage, req/s.
    pub capacity_estimate: Option<f64>,
    /// One sentence for humans.
    pub summary: String,
}

/// Summarises per-stage verdicts: `(label, verdict, request throughput)` in sweep order.
pub fn run_saturation(stages: &[(String, &StageSaturation, f64)]) -> RunSaturation {
    let mut saturated: Vec<&(String, &StageSaturation, f64)> = stages
        .iter()
        .filter(|s| s.1.verdict == Verdict::Saturated)
        .collect();
    saturated.sort_by(|a, b| {
        a.1.offered_rate
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.1.offered_rate.unwrap_or(f64::INFINITY))
    });
    let best = stages
        .iter()
        .filter(|s| s.1.verdict == Verdict::Stable)
        .max_by(|a, b| a.2.total_cmp(&b.2));
    let low = saturated.first();
    let summary = match (low, best) {
        (Some(l), Some(b)) => format!(
            "saturates at {} ({}); highest stable throughput {:.2} req/s at {}{}",
            l.0,
            fmt_rate(l.1.offered_rate),
            b.2,
            b.0,
            l.1.capacity_estimate.map_or(String::new(), |m| format!(
                "; capacity estimate {m:.2} req/s"
            ))
        ),
        (Some(l), None) => format!(
            "every tested stage is saturated from {} ({}){}",
            l.0,
            fmt_rate(l.1.offered_rate),
            l.1.capacity_estimate.map_or(String::new(), |m| format!(
                "; capacity estimate {m:.2} req/s"
            ))
        ),
        (None, Some(b)) => format!(
            "no stage saturated; highest stable throughput {:.2} req/s at {}",
            b.2, b.0
        ),
        (None, None) => "not enough completed requests to test saturation".to_string(),
    };
    RunSaturation {
        saturated_stage: low.map(|l| l.0.clone()),
        saturation_rate: low.and_then(|l| l.1.offered_rate),
        best_stable_stage: best.map(|b| b.0.clone()),
        max_stable_throughput: best.map(|b| b.2),
        capacity_estimate: low.and_then(|l| l.1.capacity_estimate),
        summary,
    }
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("rate unknown".into(), |r| format!("offered {r:.2} req/s"))
}
