//! The end-of-run summary's numbers: per-stage counts, throughput, TTFT/TPOT and send-lag
//! percentiles, accumulated request by request into a [`StageStats`] of fixed size (the full
//! analysis, with polars, is `trace report`). Each request's metrics come from
//! [`trace_format::derive`], the one definition; trace-cli draws the table.

use hdrhistogram::Histogram;
use serde::Serialize;
use trace_format::TraceRecord;

/// The figures of one finished request that the summary needs (a few words, not the chunks).
#[derive(Debug, Clone, PartialEq)]
pub struct ReqStat {
    /// Completed: no error, sent and ended.
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
    /// For a failed request: `kind: message`, for the summary's first-error line.
    pub error: Option<String>,
    /// The server's prompt count is more than [`PROMPT_TOLERANCE`] away from the workload's
    /// length; None when either is unknown.
    pub prompt_off: Option<bool>,
}

/// Prompts whose server count differs from the workload's length by more than this fraction
/// are counted in [`StageSummary::prompts_off`] (the report warns at the same bound).
pub const PROMPT_TOLERANCE: f64 = 0.05;

impl ReqStat {
    /// Extracts the figures from a finished record.
    pub fn from_record(r: &TraceRecord) -> Self {
        let m = r.metrics();
        Self {
            ok: m.completed,
            sent_ns: r.sent_ns,
            end_ns: r.end_ns,
            lag_ns: m.send_lag_ns,
            ttft_ns: m.ttft_ns,
            tpot_ns: m.tpot_ns,
            output_tokens: i32::try_from(m.output_tokens).ok(),
            max_tokens: r.max_tokens,
            error: (!m.completed).then(|| match (&r.error_kind, &r.error_msg) {
                (Some(k), Some(msg)) => format!("{}: {msg}", k.as_str()),
                (Some(k), None) => k.as_str().to_string(),
                (None, _) => "not completed".to_string(),
            }),
            prompt_off: match (r.prompt_tokens, r.expected_prompt_tokens) {
                (Some(p), Some(e)) if e > 0 && m.completed => {
                    Some((f64::from(p - e) / f64::from(e)).abs() > PROMPT_TOLERANCE)
                }
                _ => None,
            },
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
    /// Successful requests whose prompt the server counted more than 5% away from the
    /// workload's length.
    pub prompts_off: u64,
    /// Successful requests where both counts were known.
    pub prompts_checked: u64,
    /// The first failed request's error (`kind: message`), when any failed.
    pub first_error: Option<String>,
}

/// One stage's running totals and latency histograms. Its size does not grow with the number
/// of requests (a day-long replay must not keep a row per request in memory): percentiles come
/// from HDR histograms with 3 significant digits, so the summary's P50/P99 are within 0.1% of
/// the exact values that `trace report` computes from the file.
#[derive(Debug, Clone)]
pub struct StageStats {
    ok: u64,
    failed: u64,
    first_sent_ns: Option<i64>,
    last_ok_end_ns: Option<i64>,
    output_tokens: i64,
    short_outputs: u64,
    prompts_off: u64,
    prompts_checked: u64,
    first_error: Option<String>,
    ttft_ns: Histogram<u64>,
    tpot_ns: Histogram<u64>,
    lag_ns: Histogram<u64>,
}

impl Default for StageStats {
    fn default() -> Self {
        // 1 ns to 1 h, auto-resizing beyond; 3 significant digits.
        let h = || Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
        Self {
            ok: 0,
            failed: 0,
            first_sent_ns: None,
            last_ok_end_ns: None,
            output_tokens: 0,
            short_outputs: 0,
            prompts_off: 0,
            prompts_checked: 0,
            first_error: None,
            ttft_ns: h(),
            tpot_ns: h(),
            lag_ns: h(),
        }
    }
}

impl StageStats {
    /// Adds one finished request.
    pub fn add(&mut self, s: &ReqStat) {
        // Values are clamped to >= 1 ns: a histogram has no zero or negative bucket, and a
        // send lag below a nanosecond is zero for every purpose here.
        let rec = |h: &mut Histogram<u64>, v: f64| h.saturating_record(v.max(1.0) as u64);
        if let Some(t) = s.sent_ns {
            self.first_sent_ns = Some(self.first_sent_ns.map_or(t, |f| f.min(t)));
        }
        if let Some(l) = s.lag_ns {
            rec(&mut self.lag_ns, l as f64);
        }
        if !s.ok {
            self.failed += 1;
            if self.first_error.is_none() {
                self.first_error.clone_from(&s.error);
            }
            return;
        }
        self.ok += 1;
        if let Some(e) = s.end_ns {
            self.last_ok_end_ns = Some(self.last_ok_end_ns.map_or(e, |l| l.max(e)));
        }
        self.output_tokens += s.output_tokens.map_or(0, i64::from);
        if matches!((s.output_tokens, s.max_tokens), (Some(o), Some(m)) if o < m) {
            self.short_outputs += 1;
        }
        if let Some(off) = s.prompt_off {
            self.prompts_checked += 1;
            self.prompts_off += u64::from(off);
        }
        if let Some(t) = s.ttft_ns {
            rec(&mut self.ttft_ns, t as f64);
        }
        if let Some(t) = s.tpot_ns {
            rec(&mut self.tpot_ns, t);
        }
    }

    /// Requests added (finished or failed).
    pub fn requests(&self) -> u64 {
        self.ok + self.failed
    }

    /// The stage's line of the summary table.
    pub fn summary(&self, stage: &str, target_rate: Option<f64>) -> StageSummary {
        let span_s = match (self.first_sent_ns, self.last_ok_end_ns) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let per_s = |x: f64| if span_s > 0.0 { x / span_s } else { 0.0 };
        let q = |h: &Histogram<u64>, p: f64, unit: f64| {
            (!h.is_empty()).then(|| h.value_at_quantile(p / 100.0) as f64 / unit)
        };
        StageSummary {
            stage: stage.to_string(),
            target_rate,
            ok: self.ok,
            failed: self.failed,
            req_per_s: per_s(self.ok as f64),
            output_tok_per_s: per_s(self.output_tokens as f64),
            ttft_p50_ms: q(&self.ttft_ns, 50.0, 1e6),
            ttft_p99_ms: q(&self.ttft_ns, 99.0, 1e6),
            tpot_p50_ms: q(&self.tpot_ns, 50.0, 1e6),
            lag_p50_us: q(&self.lag_ns, 50.0, 1e3),
            lag_p99_us: q(&self.lag_ns, 99.0, 1e3),
            short_outputs: self.short_outputs,
            prompts_off: self.prompts_off,
            prompts_checked: self.prompts_checked,
            first_error: self.first_error.clone(),
        }
    }
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
    fn stage_summary_counts_short_outputs_and_failures() {
        let mut failed = rec(0, 0, &[], 1_000_000_000, 4);
        failed.error_kind = Some(trace_format::ErrorKind::Timeout);
        let mut acc = StageStats::default();
        for r in [
            rec(0, 0, &[(100, 1), (200, 3)], 1_000_000_000, 4),
            rec(0, 0, &[(100, 1)], 2_000_000_000, 4),
            failed,
        ] {
            acc.add(&ReqStat::from_record(&r));
        }
        let s = acc.summary("rate=1", Some(1.0));
        assert_eq!((s.ok, s.failed, s.short_outputs), (2, 1, 1));
        assert!((s.req_per_s - 1.0).abs() < 1e-9);
        assert!((s.output_tok_per_s - 2.5).abs() < 1e-9);
    }

    #[test]
    fn stage_stats_stay_small_and_within_a_tenth_of_a_percent() {
        let mut acc = StageStats::default();
        let base = std::mem::size_of_val(&acc);
        let mut exact = Vec::new();
        // 200,000 requests with TTFTs spread over 1 ms .. 2 s.
        for i in 0..200_000i64 {
            let ttft = 1_000_000 + (i * 7919 % 200_000) * 10_000;
            exact.push(ttft as f64 / 1e6);
            let r = rec(
                i,
                i,
                &[(i + ttft, 1), (i + ttft + 5_000_000, 1)],
                i + ttft + 5_000_001,
                2,
            );
            acc.add(&ReqStat::from_record(&r));
        }
        assert_eq!(acc.requests(), 200_000);
        assert_eq!(std::mem::size_of_val(&acc), base);
        let s = acc.summary("rate=1", None);
        for (got, p) in [
            (s.ttft_p50_ms.unwrap(), 50.0),
            (s.ttft_p99_ms.unwrap(), 99.0),
        ] {
            let want = trace_stats::percentile(&mut exact, p).unwrap();
            assert!((got - want).abs() <= want * 1e-3, "p{p}: {got} vs {want}");
        }
        assert!((s.tpot_p50_ms.unwrap() - 5.0).abs() <= 5.0 * 1e-3);
    }
}
