//! The one-line answer of a comparison: who saturates first, then the largest TTFT change at
//! the highest percentile the stages can test (P99, else P90, else P50) over the stages both
//! runs hold, with the P50 TPOT trade-off when it moves the other way.

use super::{MetricDiff, StageDiff};
use crate::saturation::{RunSaturation, Verdict as SatVerdict};

fn rate_str(r: Option<f64>, stage: &Option<String>) -> String {
    match (r, stage) {
        (Some(r), _) => format!("{}", (r * 100.0).round() / 100.0),
        (None, Some(s)) => s.clone(),
        _ => "?".into(),
    }
}

/// `|a|` and `|b|` as whole percentages: one figure when they round alike, else `A%-B%`.
fn pct_span(a: f64, b: f64) -> String {
    let pct = |x: f64| format!("{:.0}%", 100.0 * x.abs());
    if pct(a) == pct(b) {
        pct(a)
    } else {
        format!("{}-{}", pct(a), pct(b))
    }
}

/// Every stage of the run got a serving verdict (none too short to judge, none failing).
fn fully_judged(s: &RunSaturation) -> bool {
    s.insufficient_stages.is_empty() && s.failing_stages.is_empty()
}

/// What can be said of a run with no saturated stage: "does not saturate" only as far as its
/// stages were judged; a run whose stages were all too short says nothing about saturation.
fn unsaturated(name: &str, s: &RunSaturation) -> String {
    let unjudged = match (&s.insufficient_stages[..], &s.failing_stages[..]) {
        ([], f) => format!("{} failing", f.join(", ")),
        (i, []) => format!("{} too short to judge", i.join(", ")),
        (i, f) => format!(
            "{} too short to judge, {} failing",
            i.join(", "),
            f.join(", ")
        ),
    };
    if s.best_stable_stage.is_none() && s.insufficient_stages.is_empty() {
        format!("{name} was not judged for saturation ({unjudged})")
    } else if s.best_stable_stage.is_none() {
        format!("{name} was not judged for saturation (its stages are too short)")
    } else if fully_judged(s) {
        format!("{name} does not saturate in the tested range")
    } else {
        format!("{name} does not saturate in the stages judged ({unjudged})")
    }
}

/// The one-line answer: saturation first, then TTFT (see the module docs) over the stages both
/// runs hold.
pub fn headline(
    an: &str,
    bn: &str,
    sa: &RunSaturation,
    sb: &RunSaturation,
    stages: &[StageDiff],
) -> String {
    let (ra, rb) = (sa.saturation_rate, sb.saturation_rate);
    let sat = match (&sa.saturated_stage, &sb.saturated_stage) {
        (Some(_), Some(_)) => {
            let (x, y) = (ra.unwrap_or(f64::NAN), rb.unwrap_or(f64::NAN));
            let (rs_a, rs_b) = (
                rate_str(ra, &sa.saturated_stage),
                rate_str(rb, &sb.saturated_stage),
            );
            if y > x {
                format!("{bn} saturates later (rate {rs_b} vs {rs_a})")
            } else if y < x {
                format!("{bn} saturates earlier (rate {rs_b} vs {rs_a})")
            } else {
                format!("both saturate at rate {rs_a}")
            }
        }
        (Some(_), None) if fully_judged(sb) => format!(
            "{} ({an} saturates at rate {})",
            unsaturated(bn, sb),
            rate_str(ra, &sa.saturated_stage)
        ),
        (Some(_), None) => format!(
            "{an} saturates at rate {}, {}",
            rate_str(ra, &sa.saturated_stage),
            unsaturated(bn, sb)
        ),
        (None, Some(_)) if fully_judged(sa) => format!(
            "{bn} saturates at rate {} ({an} does not)",
            rate_str(rb, &sb.saturated_stage)
        ),
        (None, Some(_)) => format!(
            "{bn} saturates at rate {}; {}",
            rate_str(rb, &sb.saturated_stage),
            unsaturated(an, sa)
        ),
        (None, None) if fully_judged(sa) && fully_judged(sb) => {
            "neither run saturates in the tested range".to_string()
        }
        (None, None) => format!("{}; {}", unsaturated(an, sa), unsaturated(bn, sb)),
    };
    // Latency is meaningful where both runs are stable; fall back to every stage when none is.
    let stable: Vec<&StageDiff> = stages
        .iter()
        .filter(|s| {
            s.saturation_a != SatVerdict::Saturated && s.saturation_b != SatVerdict::Saturated
        })
        .collect();
    let (pool, scope) = if stable.is_empty() {
        (stages.iter().collect::<Vec<_>>(), "")
    } else {
        (stable, " up to ")
    };
    // The highest TTFT percentile the stages hold enough requests to test (a P99 needs
    // hundreds; a short capture's answer is then at P90 or the median).
    let stat = ["p99", "p90", "p50"]
        .into_iter()
        .find(|st| {
            pool.iter()
                .any(|s| s.get("ttft", st).is_some_and(|m| m.ci.is_some()))
        })
        .unwrap_or("p99");
    let label = stat.to_uppercase();
    let rows: Vec<(&str, &MetricDiff)> = pool
        .iter()
        .filter_map(|s| Some((s.stage.as_str(), s.get("ttft", stat)?)))
        .collect();
    let rels: Vec<f64> = rows.iter().filter_map(|(_, m)| m.rel_delta).collect();
    let lat = if rels.is_empty() {
        format!("{label} TTFT could not be compared")
    } else {
        let last = rows.last().map_or("", |r| r.0);
        let at = if rows.len() == 1 {
            format!(" at {last}")
        } else if scope.is_empty() {
            String::new()
        } else {
            format!("{scope}{last}")
        };
        let any_sig = rows
            .iter()
            .any(|(_, m)| m.verdict == "better" || m.verdict == "worse");
        let (lo, hi) = rels
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
                (l.min(*r), h.max(*r))
            });
        if !any_sig {
            format!("shows no significant change in {label} TTFT{at}")
        } else if hi < 0.0 {
            format!("is {} faster at {label} TTFT{at}", pct_span(hi, lo))
        } else if lo > 0.0 {
            format!("is {} slower at {label} TTFT{at}", pct_span(lo, hi))
        } else {
            format!(
                "changes {label} TTFT by {:+.0}% to {:+.0}% across stages",
                100.0 * lo,
                100.0 * hi
            )
        }
    };
    // A faster first token often costs slower decoding (and the reverse): say so when P50
    // TPOT moves significantly the other way.
    let significant = |m: &MetricDiff| m.verdict == "better" || m.verdict == "worse";
    let ttft_dir = rows
        .iter()
        .map(|r| r.1)
        .find(|m| significant(m))
        .map(|m| m.verdict);
    let tpot_against: Vec<f64> = pool
        .iter()
        .filter_map(|s| s.get("tpot", "p50"))
        .filter(|m| significant(m) && ttft_dir.is_some_and(|d| d != m.verdict))
        .filter_map(|m| m.rel_delta.map(f64::abs))
        .collect();
    let trade = match tpot_against.first() {
        Some(&first) => {
            let (lo, hi) = tpot_against
                .iter()
                .fold((first, first), |(l, h), r| (l.min(*r), h.max(*r)));
            // Opposite to TTFT: if TTFT got better, TPOT got worse.
            let word = if ttft_dir == Some("better") {
                "slower"
            } else {
                "faster"
            };
            format!(", but {} {word} at P50 TPOT", pct_span(lo, hi))
        }
        None => String::new(),
    };
    if sat.starts_with(bn) {
        format!("{sat} and {lat}{trade}")
    } else {
        format!("{sat}; {bn} {lat}{trade}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(saturated: Option<f64>, stable: bool, short: &[&str]) -> RunSaturation {
        RunSaturation {
            saturated_stage: saturated.map(|r| format!("rate={r}")),
            saturation_rate: saturated,
            best_stable_stage: stable.then(|| "rate=1".to_string()),
            max_stable_throughput: stable.then_some(1.0),
            capacity_estimate: None,
            insufficient_stages: short.iter().map(|s| s.to_string()).collect(),
            failing_stages: Vec::new(),
            stable_above: Vec::new(),
            summary: String::new(),
        }
    }

    #[test]
    fn a_run_too_short_to_judge_is_never_said_not_to_saturate() {
        let a = run(Some(8.0), true, &[]);
        let all_short = run(None, false, &["rate=1", "rate=2"]);
        let h = headline("a", "b", &a, &all_short, &[]);
        assert!(!h.contains("does not saturate"), "{h}");
        assert!(h.contains("b was not judged for saturation"), "{h}");
        let some_short = run(None, true, &["rate=16"]);
        let h = headline("a", "b", &a, &some_short, &[]);
        assert!(h.contains("in the stages judged (rate=16 too short"), "{h}");
        let h = headline("a", "b", &run(None, true, &[]), &all_short, &[]);
        assert!(!h.contains("neither"), "{h}");
        let h = headline("a", "b", &run(None, true, &[]), &run(None, true, &[]), &[]);
        assert!(
            h.starts_with("neither run saturates in the tested range"),
            "{h}"
        );
    }
}
