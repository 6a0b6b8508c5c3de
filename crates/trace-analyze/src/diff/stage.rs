//! One stage's comparison: every metric's A, B, delta, relative delta, bootstrap 95% CI and
//! verdict (latency by its CI, failure rate by a two-proportion z-test, throughput as is).

use statrs::distribution::{ContinuousCDF, Normal};
use trace_stats::{Bootstrap, Ci, Stat, p_label};

use super::{LATENCY, MetricDiff, StageDiff};
use crate::load::StageData;
use crate::report::StageReport;

fn latency_verdict(ci: Option<Ci>) -> &'static str {
    match ci {
        Some(c) if c.high < 0.0 => "better",
        Some(c) if c.low > 0.0 => "worse",
        Some(_) => "no significant change",
        None => "n/a",
    }
}

/// Fewest samples a percentile's interval needs beyond it (on its far side): the bootstrap of
/// a P99 from 80 requests resamples the one or two largest values and gives an interval far too
/// narrow (two replays of one simulated run had P99 TTFT "worse" at p = 0.002).
const MIN_TAIL: f64 = 3.0;

/// Whether `n` samples can bound statistic `s`.
fn testable(s: Stat, n: usize) -> bool {
    match s {
        Stat::Mean => n >= 2,
        Stat::Pct(p) => n as f64 * (p.min(100.0 - p) / 100.0) >= MIN_TAIL,
    }
}

/// Drops the intervals of statistics `n` samples cannot bound (after resampling, so the RNG
/// stream, and every other interval, stays as it was).
fn untestable_to_none(mut cis: Vec<Option<Ci>>, stats: &[Stat], n: usize) -> Vec<Option<Ci>> {
    for (ci, s) in cis.iter_mut().zip(stats) {
        if !testable(*s, n) {
            *ci = None;
        }
    }
    cis
}

pub(super) fn rel(a: Option<f64>, b: Option<f64>) -> (Option<f64>, Option<f64>) {
    match (a, b) {
        (Some(a), Some(b)) => (Some(b - a), (a != 0.0).then(|| (b - a) / a.abs())),
        _ => (None, None),
    }
}

/// A latency metric's distribution in a stage's report; the per-turn ones from its sessions.
fn report_dist<'r>(r: &'r StageReport, name: &str) -> Option<&'r trace_stats::Dist> {
    match name {
        "ttft_first_turn" => r.sessions.as_ref().map(|s| &s.first_turn.ttft),
        "ttft_later_turns" => r.sessions.as_ref().map(|s| &s.later_turns.ttft),
        _ => r.metrics.get(name),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn stage_diff(
    sa: &StageData,
    ra: &StageReport,
    sb: &StageData,
    rb: &StageReport,
    pairs: &[(usize, usize)],
    ps: &[f64],
    boot: &mut Bootstrap,
) -> StageDiff {
    let mut stats = vec![Stat::Mean];
    stats.extend(ps.iter().map(|p| Stat::Pct(*p)));
    let mut metrics = Vec::new();
    for (name, get) in LATENCY {
        if name == "ttfa" && (ra.reasoning_tokens.is_none() || rb.reasoning_tokens.is_none()) {
            continue;
        }
        let (Some(da), Some(db)) = (report_dist(ra, name), report_dist(rb, name)) else {
            continue;
        };
        if da.count == 0 && db.count == 0 {
            continue;
        }
        let points: Vec<(Option<f64>, Option<f64>)> = std::iter::once((da.mean, db.mean))
            .chain(ps.iter().map(|p| (da.pct(*p), db.pct(*p))))
            .collect();
        let point_delta: Vec<f64> = points
            .iter()
            .map(|(a, b)| rel(*a, *b).0.unwrap_or(f64::NAN))
            .collect();
        let cis = match get {
            Some(f) => {
                let defined = |s: &StageData| -> Vec<f64> {
                    s.rows
                        .iter()
                        .filter(|r| r.ok)
                        .map(f)
                        .filter(|x| x.is_finite())
                        .collect()
                };
                let (va, vb) = (defined(sa), defined(sb));
                let pa: Vec<f64>;
                let pb: Vec<f64>;
                let valid: Vec<(usize, usize)> = pairs
                    .iter()
                    .filter(|&&(i, j)| {
                        sa.rows[i].ok
                            && sb.rows[j].ok
                            && f(&sa.rows[i]).is_finite()
                            && f(&sb.rows[j]).is_finite()
                    })
                    .copied()
                    .collect();
                let (cis, n) = if valid.len() >= 2 {
                    pa = valid.iter().map(|&(i, _)| f(&sa.rows[i])).collect();
                    pb = valid.iter().map(|&(_, j)| f(&sb.rows[j])).collect();
                    (boot.paired(&pa, &pb, &stats, &point_delta), valid.len())
                } else {
                    let n = va.len().min(vb.len());
                    (
                        boot.unpaired(&va, &vb, (va.len(), vb.len()), &stats, &point_delta),
                        n,
                    )
                };
                untestable_to_none(cis, &stats, n)
            }
            None => {
                // Pooled gaps are not paired: a request's gaps are many samples, not one.
                let ia = boot.subsample(sa.itl_ms.len());
                let ib = boot.subsample(sb.itl_ms.len());
                let va: Vec<f64> = ia.iter().map(|&i| f64::from(sa.itl_ms[i])).collect();
                let vb: Vec<f64> = ib.iter().map(|&i| f64::from(sb.itl_ms[i])).collect();
                let cis = boot.unpaired(
                    &va,
                    &vb,
                    (sa.itl_ms.len(), sb.itl_ms.len()),
                    &stats,
                    &point_delta,
                );
                untestable_to_none(cis, &stats, sa.itl_ms.len().min(sb.itl_ms.len()))
            }
        };
        for (k, (a, b)) in points.into_iter().enumerate() {
            let (delta, rel_delta) = rel(a, b);
            let ci = cis.get(k).copied().flatten();
            metrics.push(MetricDiff {
                metric: name.into(),
                stat: match stats[k] {
                    Stat::Mean => "mean".into(),
                    Stat::Pct(p) => p_label(p),
                },
                unit: "ms",
                a,
                b,
                delta,
                rel_delta,
                ci,
                q_value: None,
                // Provisional: the comparison's FDR control sets the final verdict.
                verdict: latency_verdict(ci),
            });
        }
    }
    let scalar = |metric: &str, unit: &'static str, a: Option<f64>, b: Option<f64>| {
        let (delta, rel_delta) = rel(a, b);
        MetricDiff {
            metric: metric.into(),
            stat: "value".into(),
            unit,
            a,
            b,
            delta,
            rel_delta,
            ci: None,
            q_value: None,
            verdict: "n/a",
        }
    };
    metrics.push(scalar(
        "throughput",
        "req/s",
        Some(ra.request_throughput),
        Some(rb.request_throughput),
    ));
    metrics.push(scalar(
        "output_throughput",
        "tok/s",
        Some(ra.output_throughput),
        Some(rb.output_throughput),
    ));
    if ra.goodput.is_some() {
        metrics.push(scalar("goodput", "req/s", ra.goodput, rb.goodput));
    }
    if ra.cache_hit_rate.is_some() || rb.cache_hit_rate.is_some() {
        // Tokens of one request are not independent trials: no test, as for throughput.
        metrics.push(scalar(
            "cache_hit_rate",
            "fraction",
            ra.cache_hit_rate,
            rb.cache_hit_rate,
        ));
    }
    if ra.server_cache_hit_rate.is_some() || rb.server_cache_hit_rate.is_some() {
        metrics.push(scalar(
            "server_cache_hit_rate",
            "fraction",
            ra.server_cache_hit_rate,
            rb.server_cache_hit_rate,
        ));
    }
    if let (Some(a), Some(b)) = (&ra.sessions, &rb.sessions) {
        let failed = |s: &crate::report::SessionReport| s.failed as f64 / s.sessions.max(1) as f64;
        metrics.push(scalar(
            "session_failure_rate",
            "fraction",
            Some(failed(a)),
            Some(failed(b)),
        ));
        metrics.push(scalar(
            "session_duration_p50",
            "s",
            a.duration_s.pct(50.0),
            b.duration_s.pct(50.0),
        ));
    }
    if ra.reasoning_tokens.is_some() || rb.reasoning_tokens.is_some() {
        let per_req = |r: &StageReport| {
            r.reasoning_tokens
                .map(|t| t as f64 / r.completed.max(1) as f64)
        };
        metrics.push(scalar(
            "reasoning_tokens",
            "tok/req",
            per_req(ra),
            per_req(rb),
        ));
    }
    let mut fr = scalar(
        "failure_rate",
        "fraction",
        Some(ra.failure_rate),
        Some(rb.failure_rate),
    );
    fr.verdict = failure_verdict(ra.failed, ra.requests, rb.failed, rb.requests);
    metrics.push(fr);
    StageDiff {
        stage: sa.label.clone(),
        stage_b: sb.label.clone(),
        paired: pairs.len(),
        saturation_a: ra.saturation.verdict,
        saturation_b: rb.saturation.verdict,
        metrics,
    }
}

/// Two-proportion z-test at 5%.
pub(super) fn failure_verdict(fa: usize, na: usize, fb: usize, nb: usize) -> &'static str {
    if na == 0 || nb == 0 {
        return "n/a";
    }
    let (pa, pb) = (fa as f64 / na as f64, fb as f64 / nb as f64);
    let p = (fa + fb) as f64 / (na + nb) as f64;
    let se = (p * (1.0 - p) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    if se == 0.0 {
        return "no significant change";
    }
    let z = (pb - pa) / se;
    let crit = Normal::new(0.0, 1.0)
        .map(|d| d.inverse_cdf(0.975))
        .unwrap_or(1.96);
    if z > crit {
        "worse"
    } else if z < -crit {
        "better"
    } else {
        "no significant change"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_test() {
        assert_eq!(failure_verdict(0, 1000, 100, 1000), "worse");
        assert_eq!(failure_verdict(10, 1000, 11, 1000), "no significant change");
        assert_eq!(failure_verdict(0, 10, 0, 10), "no significant change");
    }
}
