//! The end-of-run summary table of `trace replay` (plain text on stdout, one line per stage),
//! drawn from trace-replay's [`StageSummary`] values.

use trace_replay::summary::StageSummary;

/// Renders the summary table.
pub(crate) fn render(stages: &[StageSummary]) -> String {
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
            trace_format::printable(&s.stage),
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
    #[test]
    fn one_line_per_stage_with_dashes_for_missing_values() {
        let s = trace_replay::summary::StageSummary {
            stage: "rate=1".into(),
            target_rate: Some(1.0),
            ok: 2,
            failed: 1,
            req_per_s: 1.0,
            output_tok_per_s: 2.5,
            ttft_p50_ms: Some(12.0),
            ttft_p99_ms: None,
            tpot_p50_ms: None,
            lag_p50_us: None,
            lag_p99_us: None,
            short_outputs: 0,
            prompts_off: 0,
            prompts_checked: 0,
            first_error: None,
        };
        let mut evil = s.clone();
        evil.stage = "x\x1b[2J".into();
        let t = super::render(&[s, evil]);
        assert_eq!(t.lines().count(), 3);
        assert!(!t.contains('\x1b') && t.contains("x\\u{1b}[2J"), "{t}");
        assert!(t.contains("rate=1") && t.contains("TTFT p50") && t.contains("12.0 ms"));
        assert!(t.contains("- ms"), "{t}");
    }
}
