//! `trace diff A B [C...]`: each run against the first. Pairing (request_id, else prompt_hash,
//! else unpaired), per-stage metric deltas with seeded bootstrap 95% CIs, verdicts, the
//! one-line headline, and `--fail-on` conditions.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};
use trace_format::meta;

use crate::load::{ReqRow, RunData, StageData};
use crate::report::{Report, ReportOptions, Slo, StageReport, build, num};
use crate::saturation::{RunSaturation, Verdict as SatVerdict};
use crate::stats::{Ci, Stat, bootstrap_delta, p_label, subsample};
use crate::{Error, Result};

/// Version of the diff JSON document.
pub const DIFF_SCHEMA: &str = "trace.diff/1";

/// A per-request metric accessor.
type Getter = fn(&ReqRow) -> f64;
/// Index pairs of stages (A, B) or of rows.
type Pairs = Vec<(usize, usize)>;

/// Latency metrics compared, with their per-request accessor (None: pooled ITL).
const LATENCY: [(&str, Option<Getter>); 5] = [
    ("ttft", Some(|r: &ReqRow| r.ttft_ms)),
    ("tpot", Some(|r: &ReqRow| r.tpot_ms)),
    ("itl", None),
    ("e2e", Some(|r: &ReqRow| r.e2e_ms)),
    ("e2e_from_scheduled", Some(|r: &ReqRow| r.e2e_sched_ms)),
];

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffOptions {
    /// Percentile ranks compared (50 always added).
    pub percentiles: Vec<f64>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Most values per side fed to the bootstrap (bounded work on big runs).
    pub cap: usize,
    /// Seed of the bootstrap RNG (ChaCha8): the same inputs give the same intervals.
    pub seed: u64,
    /// Goodput objectives.
    pub slo: Slo,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            percentiles: vec![50.0, 90.0, 99.0],
            resamples: 1000,
            cap: 4000,
            seed: 0,
            slo: Slo::default(),
        }
    }
}

/// How requests were matched across the two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pairing {
    /// `request_id`, `prompt_hash` or `unpaired`.
    pub mode: &'static str,
    /// Requests matched, over all compared stages.
    pub pairs: usize,
    /// Why this mode.
    pub reason: String,
}

/// One compared number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDiff {
    /// Metric (`ttft`, `throughput`, `failure_rate`...).
    pub metric: String,
    /// Statistic (`mean`, `p99`; `value` for scalars).
    pub stat: String,
    /// Unit of a, b and delta.
    pub unit: &'static str,
    /// Baseline value.
    pub a: Option<f64>,
    /// Compared value.
    pub b: Option<f64>,
    /// b - a.
    pub delta: Option<f64>,
    /// (b - a) / a.
    pub rel_delta: Option<f64>,
    /// Bootstrap 95% CI of the delta, when computed.
    pub ci: Option<Ci>,
    /// `better`, `worse`, `no significant change`, or `n/a` (no test for this number).
    pub verdict: &'static str,
}

/// One stage's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageDiff {
    /// Stage label in A.
    pub stage: String,
    /// Stage label in B (differs only when two single-stage runs are compared).
    pub stage_b: String,
    /// Requests paired in this stage.
    pub paired: usize,
    /// Saturation verdict of A's stage.
    pub saturation_a: SatVerdict,
    /// Saturation verdict of B's stage.
    pub saturation_b: SatVerdict,
    /// Every compared number.
    pub metrics: Vec<MetricDiff>,
}

impl StageDiff {
    /// The row for `metric` and `stat`.
    pub fn get(&self, metric: &str, stat: &str) -> Option<&MetricDiff> {
        self.metrics
            .iter()
            .find(|m| m.metric == metric && m.stat == stat)
    }
}

/// One run against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The baseline's name.
    pub a: String,
    /// This run's name.
    pub b: String,
    /// This run's file.
    pub file_b: String,
    /// The one-line answer.
    pub headline: String,
    /// How requests were paired.
    pub pairing: Pairing,
    /// Caveats (different workloads, stage labels that differ...).
    pub notes: Vec<String>,
    /// Per common stage.
    pub stages: Vec<StageDiff>,
    /// Baseline's run saturation.
    pub saturation_a: RunSaturation,
    /// This run's saturation.
    pub saturation_b: RunSaturation,
}

/// The whole diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// [`DIFF_SCHEMA`].
    pub schema: &'static str,
    /// The baseline file.
    pub baseline: String,
    /// Percentile ranks compared.
    pub percentiles: Vec<f64>,
    /// Bootstrap resamples and seed.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Each later run against the first.
    pub comparisons: Vec<Comparison>,
}

/// The report options a diff uses for each run's own report.
pub fn report_options(opts: &DiffOptions) -> ReportOptions {
    ReportOptions {
        percentiles: opts.percentiles.clone(),
        slo: opts.slo,
    }
}

/// Builds each run's report (needed by [`compare`] and by the HTML page).
pub fn reports(runs: &mut [RunData], opts: &DiffOptions) -> Vec<Report> {
    let ropts = report_options(opts);
    runs.iter_mut().map(|r| build(r, &ropts)).collect()
}

/// Compares every run after the first against the first. Runs must be loaded with ids
/// ([`crate::LoadOptions::with_ids`]) for pairing; `reports` come from [`reports`].
pub fn compare(runs: &[RunData], reports: &[Report], opts: &DiffOptions) -> Result<Diff> {
    let ps = report_options(opts).ranks();
    let (Some((a_run, rest)), Some((a_rep, rest_rep))) =
        (runs.split_first(), reports.split_first())
    else {
        return Err(Error::NotComparable {
            a: "-".into(),
            b: "-".into(),
            reason: "no runs given".into(),
        });
    };
    if rest.is_empty() {
        return Err(Error::NotComparable {
            a: a_run.path.display().to_string(),
            b: "-".into(),
            reason: "diff needs at least two runs".into(),
        });
    }
    let mut comparisons = Vec::new();
    for (b_run, b_rep) in rest.iter().zip(rest_rep) {
        comparisons.push(compare_two(a_run, a_rep, b_run, b_rep, &ps, opts)?);
    }
    Ok(Diff {
        schema: DIFF_SCHEMA,
        baseline: a_run.path.display().to_string(),
        percentiles: ps,
        resamples: opts.resamples,
        seed: opts.seed,
        comparisons,
    })
}

fn stage_pairs(a: &RunData, b: &RunData) -> Result<(Pairs, Vec<String>)> {
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for (i, sa) in a.stages.iter().enumerate() {
        if let Some(j) = b.stages.iter().position(|sb| sb.label == sa.label) {
            out.push((i, j));
        }
    }
    if out.is_empty() {
        if a.stages.len() == 1 && b.stages.len() == 1 {
            notes.push(format!(
                "stage labels differ ('{}' vs '{}'); comparing the two single stages",
                a.stages[0].label, b.stages[0].label
            ));
            out.push((0, 0));
        } else {
            let labels = |r: &RunData| {
                r.stages
                    .iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::NotComparable {
                a: a.path.display().to_string(),
                b: b.path.display().to_string(),
                reason: format!(
                    "no common stages (A has [{}], B has [{}]); replay both at the same rates, or \
                     compare single-stage traces",
                    labels(a),
                    labels(b)
                ),
            });
        }
    }
    Ok((out, notes))
}

/// Index pairs (row in A's stage, row in B's stage) matched on `key`.
fn match_on<K: Eq + Hash + Clone>(ka: &[Option<K>], kb: &[Option<K>]) -> Vec<(usize, usize)> {
    let mut first: HashMap<K, usize> = HashMap::with_capacity(ka.len());
    for (i, k) in ka.iter().enumerate() {
        if let Some(k) = k {
            first.entry(k.clone()).or_insert(i);
        }
    }
    let mut used = vec![false; ka.len()];
    let mut out = Vec::new();
    for (j, k) in kb.iter().enumerate() {
        if let Some(&i) = k.as_ref().and_then(|k| first.get(k))
            && !used[i]
        {
            used[i] = true;
            out.push((i, j));
        }
    }
    out
}

fn choose_pairing(
    a: &RunData,
    b: &RunData,
    stages: &[(usize, usize)],
) -> (Pairing, Vec<Vec<(usize, usize)>>) {
    let size: usize = stages
        .iter()
        .map(|&(i, j)| a.stages[i].rows.len().min(b.stages[j].rows.len()))
        .sum();
    let enough = |n: usize| size > 0 && n * 2 >= size;
    let by_id: Vec<Vec<(usize, usize)>> = stages
        .iter()
        .map(|&(i, j)| match_on(&a.stages[i].request_ids, &b.stages[j].request_ids))
        .collect();
    let n_id: usize = by_id.iter().map(Vec::len).sum();
    // Ids like "0", "1" collide across unrelated synthetic workloads: trust an id match only
    // when the prompts agree too (where both runs recorded a hash).
    let (mut both, mut agree) = (0usize, 0usize);
    for (k, &(i, j)) in stages.iter().enumerate() {
        for &(x, y) in &by_id[k] {
            if let (Some(ha), Some(hb)) =
                (a.stages[i].prompt_hashes[x], b.stages[j].prompt_hashes[y])
            {
                both += 1;
                agree += usize::from(ha == hb);
            }
        }
    }
    let hashes_agree = both == 0 || agree * 100 >= both * 95;
    if enough(n_id) && hashes_agree {
        return (
            Pairing {
                mode: "request_id",
                pairs: n_id,
                reason: format!(
                    "{n_id} requests share a request_id{}",
                    if both > 0 { " and prompt" } else { "" }
                ),
            },
            by_id,
        );
    }
    let by_hash: Vec<Vec<(usize, usize)>> = stages
        .iter()
        .map(|&(i, j)| match_on(&a.stages[i].prompt_hashes, &b.stages[j].prompt_hashes))
        .collect();
    let n_hash: usize = by_hash.iter().map(Vec::len).sum();
    if enough(n_hash) {
        return (
            Pairing {
                mode: "prompt_hash",
                pairs: n_hash,
                reason: format!(
                    "{n_hash} requests share a prompt_hash (request ids did not match)"
                ),
            },
            by_hash,
        );
    }
    let reason = if enough(n_id) {
        "request ids match but their prompts differ: the runs replayed different workloads"
            .to_string()
    } else {
        format!(
            "fewer than half the requests match by request_id ({n_id}) or prompt_hash ({n_hash}): \
             the runs did not replay the same workload; distributions are compared unpaired"
        )
    };
    (
        Pairing {
            mode: "unpaired",
            pairs: 0,
            reason,
        },
        vec![Vec::new(); stages.len()],
    )
}

fn latency_verdict(ci: Option<Ci>) -> &'static str {
    match ci {
        Some(c) if c.high < 0.0 => "better",
        Some(c) if c.low > 0.0 => "worse",
        Some(_) => "no significant change",
        None => "n/a",
    }
}

fn rel(a: Option<f64>, b: Option<f64>) -> (Option<f64>, Option<f64>) {
    match (a, b) {
        (Some(a), Some(b)) => (Some(b - a), (a != 0.0).then(|| (b - a) / a.abs())),
        _ => (None, None),
    }
}

#[allow(clippy::too_many_arguments)]
fn stage_diff(
    sa: &StageData,
    ra: &StageReport,
    sb: &StageData,
    rb: &StageReport,
    pairs: &[(usize, usize)],
    ps: &[f64],
    opts: &DiffOptions,
    rng: &mut ChaCha8Rng,
) -> StageDiff {
    let mut stats = vec![Stat::Mean];
    stats.extend(ps.iter().map(|p| Stat::Pct(*p)));
    let mut metrics = Vec::new();
    for (name, get) in LATENCY {
        let (Some(da), Some(db)) = (ra.metrics.get(name), rb.metrics.get(name)) else {
            continue;
        };
        let points: Vec<(Option<f64>, Option<f64>)> = std::iter::once((da.mean, db.mean))
            .chain(ps.iter().map(|p| (da.pct(*p), db.pct(*p))))
            .collect();
        let point_delta: Vec<f64> = points
            .iter()
            .map(|(a, b)| rel(*a, *b).0.unwrap_or(f64::NAN))
            .collect();
        let cis = match get {
            Some(f) => {
                let va: Vec<f64> = sa
                    .rows
                    .iter()
                    .filter(|r| r.ok)
                    .map(f)
                    .filter(|x| x.is_finite())
                    .collect();
                let vb: Vec<f64> = sb
                    .rows
                    .iter()
                    .filter(|r| r.ok)
                    .map(f)
                    .filter(|x| x.is_finite())
                    .collect();
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
                if valid.len() >= 2 {
                    pa = valid.iter().map(|&(i, _)| f(&sa.rows[i])).collect();
                    pb = valid.iter().map(|&(_, j)| f(&sb.rows[j])).collect();
                    let idx: Vec<(usize, usize)> = (0..valid.len()).map(|k| (k, k)).collect();
                    bootstrap_delta(
                        &pa,
                        &pb,
                        (valid.len(), valid.len()),
                        Some(&idx),
                        &stats,
                        &point_delta,
                        opts.resamples,
                        opts.cap,
                        rng,
                    )
                } else {
                    bootstrap_delta(
                        &va,
                        &vb,
                        (va.len(), vb.len()),
                        None,
                        &stats,
                        &point_delta,
                        opts.resamples,
                        opts.cap,
                        rng,
                    )
                }
            }
            None => {
                // Pooled gaps are not paired: a request's gaps are many samples, not one.
                let ia = subsample(sa.itl_ms.len(), opts.cap, rng);
                let ib = subsample(sb.itl_ms.len(), opts.cap, rng);
                let va: Vec<f64> = ia.iter().map(|&i| f64::from(sa.itl_ms[i])).collect();
                let vb: Vec<f64> = ib.iter().map(|&i| f64::from(sb.itl_ms[i])).collect();
                bootstrap_delta(
                    &va,
                    &vb,
                    (sa.itl_ms.len(), sb.itl_ms.len()),
                    None,
                    &stats,
                    &point_delta,
                    opts.resamples,
                    opts.cap,
                    rng,
                )
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
fn failure_verdict(fa: usize, na: usize, fb: usize, nb: usize) -> &'static str {
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

fn compare_two(
    a: &RunData,
    ra: &Report,
    b: &RunData,
    rb: &Report,
    ps: &[f64],
    opts: &DiffOptions,
) -> Result<Comparison> {
    let (stage_idx, mut notes) = stage_pairs(a, b)?;
    let (pairing, pairs) = choose_pairing(a, b, &stage_idx);
    if let (Some(wa), Some(wb)) = (a.meta.get(meta::WORKLOAD), b.meta.get(meta::WORKLOAD))
        && wa != wb
    {
        notes.push(
            "the runs' workload specs differ: latency differences may come from the requests, \
             not the engine"
                .into(),
        );
    }
    for (label, r) in [(a.name(), ra), (b.name(), rb)] {
        for w in &r.warnings {
            notes.push(format!("{label}: {w}"));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut stages = Vec::new();
    for (k, &(i, j)) in stage_idx.iter().enumerate() {
        stages.push(stage_diff(
            &a.stages[i],
            &ra.stages[i],
            &b.stages[j],
            &rb.stages[j],
            &pairs[k],
            ps,
            opts,
            &mut rng,
        ));
    }
    let headline = headline(
        &a.name(),
        &b.name(),
        &ra.saturation,
        &rb.saturation,
        &stages,
    );
    Ok(Comparison {
        a: a.name(),
        b: b.name(),
        file_b: b.path.display().to_string(),
        headline,
        pairing,
        notes,
        stages,
        saturation_a: ra.saturation.clone(),
        saturation_b: rb.saturation.clone(),
    })
}

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

/// The one-line answer: saturation first, then P99 TTFT over the stages both runs hold.
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
        (Some(_), None) => format!(
            "{bn} does not saturate in the tested range ({an} saturates at rate {})",
            rate_str(ra, &sa.saturated_stage)
        ),
        (None, Some(_)) => format!(
            "{bn} saturates at rate {} ({an} does not)",
            rate_str(rb, &sb.saturated_stage)
        ),
        (None, None) => "neither run saturates in the tested range".to_string(),
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
    let rows: Vec<(&str, &MetricDiff)> = pool
        .iter()
        .filter_map(|s| Some((s.stage.as_str(), s.get("ttft", "p99")?)))
        .collect();
    let rels: Vec<f64> = rows.iter().filter_map(|(_, m)| m.rel_delta).collect();
    let lat = if rels.is_empty() {
        "P99 TTFT could not be compared".to_string()
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
            format!("shows no significant change in P99 TTFT{at}")
        } else if hi < 0.0 {
            format!("is {} faster at P99 TTFT{at}", pct_span(hi, lo))
        } else if lo > 0.0 {
            format!("is {} slower at P99 TTFT{at}", pct_span(lo, hi))
        } else {
            format!(
                "changes P99 TTFT by {:+.0}% to {:+.0}% across stages",
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

/// Comparison operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Lt,
}

/// How a condition's number is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// Relative delta in percent (percentage points for failure_rate).
    Percent,
    /// Absolute delta in the metric's unit, after multiplying by this factor.
    Abs(f64),
}

/// One parsed `--fail-on` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    metric: String,
    stat: String,
    op: Op,
    value: f64,
    unit: Unit,
}

/// Parsed `--fail-on` conditions: `METRIC[.STAT](>|<)[+|-]NUMBER[%|ms|s]`, comma-separated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FailOn {
    conds: Vec<Condition>,
}

const SCALARS: [&str; 4] = ["throughput", "output_throughput", "goodput", "failure_rate"];

impl FailOn {
    /// Parses an expression such as `ttft.p99>+10%,throughput<-5%`.
    ///
    /// Latency metrics (`ttft`, `tpot`, `itl`, `e2e`, `e2e_from_scheduled`) need a statistic
    /// (`mean`, `median`, `p50`, `p99.9`...). `%` compares the relative delta (B vs A) in
    /// percent; `ms`/`s` or a bare number compares the absolute delta (ms for latency, req/s or
    /// tok/s for throughput). For `failure_rate`, `%` means percentage points.
    pub fn parse(expr: &str) -> Result<Self> {
        let mut conds = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: &str| Error::BadCondition {
                part: part.to_string(),
                reason: reason.into(),
            };
            let (pos, op) = match (part.find('>'), part.find('<')) {
                (Some(p), None) => (p, Op::Gt),
                (None, Some(p)) => (p, Op::Lt),
                _ => return Err(bad("expected exactly one '>' or '<', e.g. ttft.p99>+10%")),
            };
            let (lhs, rhs) = (part[..pos].trim(), part[pos + 1..].trim());
            let (metric, stat) = match lhs.split_once('.') {
                Some((m, s)) => (m.trim(), Some(s.trim())),
                None => (lhs, None),
            };
            let latency = LATENCY.iter().any(|(n, _)| *n == metric);
            if !latency && !SCALARS.contains(&metric) {
                return Err(bad(&format!(
                    "unknown metric '{metric}'; one of ttft, tpot, itl, e2e, e2e_from_scheduled, throughput, \
                     output_throughput, goodput, failure_rate"
                )));
            }
            let stat = match (latency, stat) {
                (true, None) => {
                    return Err(bad(&format!(
                        "name a statistic, e.g. {metric}.p99 or {metric}.mean"
                    )));
                }
                (true, Some("mean")) => "mean".to_string(),
                (true, Some("median")) => "p50".to_string(),
                (true, Some(s)) => {
                    let p = s
                        .strip_prefix('p')
                        .and_then(|n| n.parse::<f64>().ok())
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| {
                            bad(&format!(
                                "unknown statistic '{s}'; use mean, median or pNN (p99, p99.9)"
                            ))
                        })?;
                    p_label(p)
                }
                (false, None) => "value".to_string(),
                (false, Some(s)) => {
                    return Err(bad(&format!(
                        "'{metric}' takes no statistic (found '.{s}')"
                    )));
                }
            };
            let (num, unit) = if let Some(n) = rhs.strip_suffix('%') {
                (n, Unit::Percent)
            } else if let Some(n) = rhs.strip_suffix("ms") {
                (n, Unit::Abs(1.0))
            } else if let Some(n) = rhs.strip_suffix('s') {
                (n, Unit::Abs(1000.0))
            } else {
                (rhs, Unit::Abs(1.0))
            };
            if !latency && matches!(unit, Unit::Abs(f) if f != 1.0 || rhs.ends_with("ms")) {
                return Err(bad("time units apply to latency metrics only"));
            }
            let value = num
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(&format!(
                        "'{rhs}' is not a number with an optional %, ms or s"
                    ))
                })?;
            conds.push(Condition {
                text: part.to_string(),
                metric: metric.into(),
                stat,
                op,
                value,
                unit,
            });
        }
        if conds.is_empty() {
            return Err(Error::BadCondition {
                part: expr.into(),
                reason: "no condition given".into(),
            });
        }
        Ok(Self { conds })
    }

    /// Percentile ranks the conditions need computed.
    pub fn ranks(&self) -> Vec<f64> {
        self.conds
            .iter()
            .filter_map(|c| c.stat.strip_prefix('p')?.parse().ok())
            .collect()
    }

    /// The conditions that hold, as human-readable lines (empty: none holds).
    pub fn check(&self, diff: &Diff) -> Vec<String> {
        let mut hits = Vec::new();
        for c in &self.conds {
            for cmp in &diff.comparisons {
                for s in &cmp.stages {
                    let Some(m) = s.get(&c.metric, &c.stat) else {
                        continue;
                    };
                    let observed = match c.unit {
                        Unit::Percent if c.metric == "failure_rate" => m.delta.map(|d| d * 100.0),
                        Unit::Percent => m.rel_delta.map(|r| r * 100.0),
                        Unit::Abs(f) => m.delta.map(|d| d / f),
                    };
                    let Some(v) = observed else { continue };
                    let holds = match c.op {
                        Op::Gt => v > c.value,
                        Op::Lt => v < c.value,
                    };
                    if holds {
                        let unit = match c.unit {
                            Unit::Percent => "%".to_string(),
                            Unit::Abs(1000.0) => "s".into(),
                            Unit::Abs(_) => {
                                if m.unit == "ms" {
                                    "ms".into()
                                } else {
                                    format!(" {}", m.unit)
                                }
                            }
                        };
                        hits.push(format!(
                            "{}: {} vs {} at {}: {}.{} changed by {v:+.2}{unit}",
                            c.text, cmp.b, cmp.a, s.stage, c.metric, c.stat
                        ));
                    }
                }
            }
        }
        hits
    }
}

fn ci_str(ci: Option<Ci>, prec: usize) -> String {
    ci.map_or("-".into(), |c| {
        format!("[{:+.prec$}, {:+.prec$}]", c.low, c.high)
    })
}

fn rel_str(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:+.1}%", 100.0 * r))
}

impl Diff {
    /// Plain text: the headline of each comparison first, then per-stage tables.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for c in &self.comparisons {
            let _ = writeln!(o, "{}", c.headline);
        }
        for c in &self.comparisons {
            let _ = writeln!(o, "\n{} (B) vs {} (A, baseline)", c.b, c.a);
            let _ = writeln!(o, "pairing: {} ({})", c.pairing.mode, c.pairing.reason);
            for n in &c.notes {
                let _ = writeln!(o, "note: {n}");
            }
            for s in &c.stages {
                let title = if s.stage == s.stage_b {
                    s.stage.clone()
                } else {
                    format!("{} vs {}", s.stage, s.stage_b)
                };
                let _ = writeln!(
                    o,
                    "\n== stage {title} : A {} / B {} ==",
                    s.saturation_a.as_str(),
                    s.saturation_b.as_str()
                );
                let _ = writeln!(
                    o,
                    "{:<30}{:>11}{:>11}{:>11}{:>9}  {:<24}verdict",
                    "metric", "A", "B", "delta", "rel", "95% CI of delta"
                );
                for m in &s.metrics {
                    let name = if m.stat == "value" {
                        format!("{} ({})", m.metric, m.unit)
                    } else {
                        format!("{} {} ({})", m.metric, m.stat, m.unit)
                    };
                    let prec = if m.unit == "fraction" { 4 } else { 2 };
                    let _ = writeln!(
                        o,
                        "{name:<30}{:>11}{:>11}{:>11}{:>9}  {:<24}{}",
                        num(m.a, prec),
                        num(m.b, prec),
                        m.delta.map_or("-".into(), |d| format!("{d:+.prec$}")),
                        rel_str(m.rel_delta),
                        ci_str(m.ci, prec),
                        m.verdict
                    );
                }
            }
            let _ = writeln!(o, "\nsaturation A: {}", c.saturation_a.summary);
            let _ = writeln!(o, "saturation B: {}", c.saturation_b.summary);
        }
        o
    }

    /// Markdown: headline, then one table per stage.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        for c in &self.comparisons {
            let _ = writeln!(o, "**{}**\n", c.headline);
            let _ = writeln!(
                o,
                "- B: `{}` vs A: `{}`; pairing: {} ({})",
                c.b, c.a, c.pairing.mode, c.pairing.reason
            );
            for n in &c.notes {
                let _ = writeln!(o, "- note: {n}");
            }
            let _ = writeln!(
                o,
                "- saturation A: {}\n- saturation B: {}",
                c.saturation_a.summary, c.saturation_b.summary
            );
            for s in &c.stages {
                let _ = writeln!(
                    o,
                    "\n### {} (A {}, B {})\n",
                    s.stage,
                    s.saturation_a.as_str(),
                    s.saturation_b.as_str()
                );
                let _ = writeln!(
                    o,
                    "| metric | stat | A | B | delta | rel | 95% CI | verdict |"
                );
                let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---|---|");
                for m in &s.metrics {
                    let _ = writeln!(
                        o,
                        "| {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
                        m.metric,
                        m.unit,
                        m.stat,
                        num(m.a, 3),
                        num(m.b, 3),
                        num(m.delta, 3),
                        rel_str(m.rel_delta),
                        ci_str(m.ci, 3),
                        m.verdict
                    );
                }
            }
            let _ = writeln!(o);
        }
        o
    }

    /// Long CSV: one row per compared number.
    pub fn to_csv(&self) -> String {
        let mut o = String::from(
            "a,b,stage,metric,stat,unit,value_a,value_b,delta,rel_delta,ci_low,ci_high,verdict\n",
        );
        let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
        let q = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        for c in &self.comparisons {
            for s in &c.stages {
                for m in &s.metrics {
                    let _ = writeln!(
                        o,
                        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        q(&c.a),
                        q(&c.b),
                        q(&s.stage),
                        m.metric,
                        m.stat,
                        m.unit,
                        f(m.a),
                        f(m.b),
                        f(m.delta),
                        f(m.rel_delta),
                        f(m.ci.map(|c| c.low)),
                        f(m.ci.map(|c| c.high)),
                        m.verdict
                    );
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_parses_and_names_the_bad_part() {
        let f =
            FailOn::parse("ttft.p99>+10%, throughput<-5%,e2e.mean>50ms,failure_rate>1%").unwrap();
        assert_eq!(f.conds.len(), 4);
        assert_eq!(f.ranks(), vec![99.0]);
        for (bad, needle) in [
            ("ttft>10%", "name a statistic"),
            ("latency.p99>1%", "unknown metric"),
            ("ttft.p99=1", "exactly one"),
            ("ttft.q99>1%", "unknown statistic"),
            ("ttft.p99>ten%", "not a number"),
            ("throughput<-5ms", "latency metrics only"),
        ] {
            let e = FailOn::parse(&format!("ttft.p50>1%,{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("'{bad}'")) && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn failure_rate_test() {
        assert_eq!(failure_verdict(0, 1000, 100, 1000), "worse");
        assert_eq!(failure_verdict(10, 1000, 11, 1000), "no significant change");
        assert_eq!(failure_verdict(0, 10, 0, 10), "no significant change");
    }
}
