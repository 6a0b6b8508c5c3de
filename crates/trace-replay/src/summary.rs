//! The end-of-run summary: per-stage counts, throughput, TTFT/TPOT and send-lag percentiles,
//! computed in memory from a compact [`ReqStat`] per request (the full analysis, with polars, is
//! `trace report`). Definitions follow DESIGN.md "Metric definitions".

use serde::Serialize;
use trace_format::TraceRecord;

/// The figures of one finished request that the summary needs (a few words, not the chunks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReqStat {
    /// Finished without an error.
    pub ok: bool,
    /// `sent_ns`.
    pub sent_ns: Option<i64>,
    /// `end_ns`.
    pub end_ns: Option<i64>,
    /// Send lag: `sent_ns - scheduled_ns`.
    pub lag_ns: Option<i64>,
    /// First token-bearing event minus `sent_ns`.
    pub ttft_ns: Option<i64>,
    /// `(E2E - TTFT) / (output_tokens - 1)`.
    pub tpot_ns: Option<f64>,
    /// Output tokens.
    pub output_tokens: Option<i32>,
    /// Output cap asked for.
    pub max_tokens: Option<i32>,
}

impl ReqStat {
    /// Extracts the figures from a finished record.
    pub fn from_record(r: &TraceRecord) -> Self {
        let ok = r.error_kind.is_none();
        let lag_ns = r.sent_ns.map(|s| s - r.scheduled_ns);
        let first_tok = r
            .chunk_ns
            .iter()
            .zip(&r.chunk_tokens)
            .find(|(_, k)| **k > 0)
            .map(|(t, _)| *t);
        let ttft_ns = match (first_tok, r.sent_ns) {
            (Some(f), Some(s)) => Some(f - s),
            _ => None,
        };
        let out = r
            .output_tokens
            .or_else(|| (!r.chunk_tokens.is_empty()).then(|| r.chunk_tokens.iter().sum::<i32>()));
        let tpot_ns = match (ttft_ns, r.sent_ns, r.end_ns, out) {
            (Some(ttft), Some(s), Some(e), Some(n)) if n > 1 => {
                Some(((e - s) - ttft) as f64 / f64::from(n - 1))
            }
            _ => None,
        };
        Self {
            ok,
            sent_ns: r.sent_ns,
            end_ns: r.end_ns,
            lag_ns,
            ttft_ns,
            tpot_ns,
            output_tokens: out,
            max_tokens: r.max_tokens,
        }
    }
}

/// One stage's line of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    /// Stage label.
    pub stage: String,
    /// Requested rate (req/s); None for recorded timing.
    pub target_rate: Option<f64>,
    /// Requests that finished without error.
    pub ok: u64,
    /// Requests that failed (including cancelled).
    pub failed: u64,
    /// Successful requests per second over the stage span (first send to last end).
    pub req_per_s: f64,
    /// Output tokens per second over the same span.
    pub output_tok_per_s: f64,
    /// TTFT P50, ms.
    pub ttft_p50_ms: Option<f64>,
    /// TTFT P99, ms.
    pub ttft_p99_ms: Option<f64>,
    /// TPOT P50, ms.
    pub tpot_p50_ms: Option<f64>,
    /// Send lag P50, µs.
    pub lag_p50_us: Option<f64>,
    /// Send lag P99, µs.
    pub lag_p99_us: Option<f64>,
    /// Successful requests whose output was shorter than their `max_tokens` (early EOS).
    pub short_outputs: u64,
}

/// Linear-interpolated percentile (`q` in 0..=100) of unsorted values; None when empty.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = (q / 100.0).clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

/// Summarises one stage.
pub fn summarize(stage: &str, target_rate: Option<f64>, stats: &[ReqStat]) -> StageSummary {
    let ok: Vec<&ReqStat> = stats.iter().filter(|s| s.ok).collect();
    let first = stats.iter().filter_map(|s| s.sent_ns).min();
    let last = ok.iter().filter_map(|s| s.end_ns).max();
    let span_s = match (first, last) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let tokens: i64 = ok
        .iter()
        .filter_map(|s| s.output_tokens)
        .map(i64::from)
        .sum();
    let per_s = |x: f64| if span_s > 0.0 { x / span_s } else { 0.0 };
    let mut ttft: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.ttft_ns)
        .map(|v| v as f64 / 1e6)
        .collect();
    let mut tpot: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.tpot_ns)
        .map(|v| v / 1e6)
        .collect();
    let mut lag: Vec<f64> = stats
        .iter()
        .filter_map(|s| s.lag_ns)
        .map(|v| v as f64 / 1e3)
        .collect();
    let short_outputs = ok
        .iter()
        .filter(|s| matches!((s.output_tokens, s.max_tokens), (Some(o), Some(m)) if o < m))
        .count() as u64;
    StageSummary {
        stage: stage.to_string(),
        target_rate,
        ok: ok.len() as u64,
        failed: (stats.len() - ok.len()) as u64,
        req_per_s: per_s(ok.len() as f64),
        output_tok_per_s: per_s(tokens as f64),
        ttft_p50_ms: percentile(&mut ttft, 50.0),
        ttft_p99_ms: percentile(&mut ttft, 99.0),
        tpot_p50_ms: percentile(&mut tpot, 50.0),
        lag_p50_us: percentile(&mut lag, 50.0),
        lag_p99_us: percentile(&mut lag, 99.0),
        short_outputs,
    }
}

/// Renders the summary table (plain text, one line per stage).
pub fn render_table(stages: &[StageSummary]) -> String {
    let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    let mut out = format!(
        "{:<14} {:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}\n",
        "stage",
        "ok",
        "failed",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "lag p50",
        "lag p99"
    );
    for s in stages {
        out.push_str(&format!(
            "{:<14} {:>6} {:>6} {:>8.2} {:>10.1} {:>8} ms {:>8} ms {:>8} ms {:>8} us {:>8} us\n",
            s.stage,
            s.ok,
            s.failed,
            s.req_per_s,
            s.output_tok_per_s,
            f(s.ttft_p50_ms, 1),
            f(s.ttft_p99_ms, 1),
            f(s.tpot_p50_ms, 2),
            f(s.lag_p50_us, 0),
            f(s.lag_p99_us, 0),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sched: i64, sent: i64, chunks: &[(i64, i32)], end: i64, max: i32) -> TraceRecord {
        TraceRecord {
            scheduled_ns: sched,
            sent_ns: Some(sent),
            chunk_ns: chunks.iter().map(|c| c.0).collect(),
            chunk_tokens: chunks.iter().map(|c| c.1).collect(),
            end_ns: Some(end),
            max_tokens: Some(max),
            ..Default::default()
        }
    }

    #[test]
    fn request_figures_follow_the_definitions() {
        // Role-only first event does not stop the TTFT clock.
        let r = rec(0, 10, &[(20, 0), (50, 1), (60, 2), (70, 1)], 80, 4);
        let s = ReqStat::from_record(&r);
        assert_eq!(s.lag_ns, Some(10));
        assert_eq!(s.ttft_ns, Some(40));
        assert_eq!(s.output_tokens, Some(4));
        assert_eq!(s.tpot_ns, Some((70.0 - 40.0) / 3.0));
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&mut [1.0, 2.0], 50.0), Some(1.5));
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 100.0), Some(5.0));
    }

    #[test]
    fn stage_summary_counts_short_outputs_and_failures() {
        let mut failed = rec(0, 0, &[], 1_000_000_000, 4);
        failed.error_kind = Some("timeout".into());
        let stats: Vec<ReqStat> = [
            rec(0, 0, &[(100, 1), (200, 3)], 1_000_000_000, 4),
            rec(0, 0, &[(100, 1)], 2_000_000_000, 4),
            failed,
        ]
        .iter()
        .map(ReqStat::from_record)
        .collect();
        let s = summarize("rate=1", Some(1.0), &stats);
        assert_eq!((s.ok, s.failed, s.short_outputs), (2, 1, 1));
        assert!((s.req_per_s - 1.0).abs() < 1e-9);
        assert!((s.output_tok_per_s - 2.5).abs() < 1e-9);
        let t = render_table(&[s]);
        assert!(t.contains("rate=1") && t.contains("TTFT p50"), "{t}");
    }
}
