//! `trace diff A B [C...]`: each run against the first. This file owns the diff's shape (what
//! is compared, [`DiffOptions`], [`Diff`]) and its entry points ([`analyze`], [`compare`]); the
//! parts are cut along their seams:
//! - `pairing`: matching stages and requests (request_id, else prompt_hash, else unpaired);
//! - `stage`: one stage's metric deltas with seeded bootstrap 95% CIs, and their verdicts;
//! - `headline`: the one-line answer;
//! - `fail_on`: `--fail-on` conditions ([`FailOn`]).
//!
//! Text, markdown and CSV rendering live in `crate::render`, beside the report's.

mod fail_on;
mod headline;
mod pairing;
mod stage;

use std::path::Path;

use serde::Serialize;
use trace_format::meta;
use trace_stats::{Bootstrap, Ci};

pub use fail_on::{Condition, FailOn};
pub use headline::headline;

use crate::load::{LoadOptions, ReqRow, RunData, load_run};
use crate::report::{Report, ReportOptions, Slo, build};
use crate::saturation::{RunSaturation, Verdict as SatVerdict};
use crate::{Error, Result};

/// Version of the diff JSON document.
pub const DIFF_SCHEMA: &str = "trace.diff/1";

/// A per-request metric accessor.
pub(crate) type Getter = fn(&ReqRow) -> f64;
/// Index pairs of stages (A, B) or of rows.
pub(crate) type Pairs = Vec<(usize, usize)>;

/// Latency metrics compared, with their per-request accessor (None: pooled ITL).
pub(crate) const LATENCY: [(&str, Option<Getter>); 8] = [
    ("ttft", Some(|r: &ReqRow| r.ttft_ms)),
    // Session workloads: first turns and later ones (which resend history and meet the prefix
    // cache) apart; NaN leaves a row out. Compared only when both runs have sessions.
    (
        "ttft_first_turn",
        Some(|r: &ReqRow| match (r.session, r.turn) {
            (Some(_), Some(0) | None) => r.ttft_ms,
            _ => f64::NAN,
        }),
    ),
    (
        "ttft_later_turns",
        Some(|r: &ReqRow| match (r.session, r.turn) {
            (Some(_), Some(t)) if t > 0 => r.ttft_ms,
            _ => f64::NAN,
        }),
    ),
    // Compared only when both runs reason (else it repeats TTFT): see `stage_diff`.
    ("ttfa", Some(|r: &ReqRow| r.ttfa_ms)),
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
    /// `--fail-on` conditions; their percentile ranks are compared too.
    pub fail_on: Option<FailOn>,
    /// Smallest relative change called better or worse (practical significance): a change
    /// the statistics are sure of but smaller than this is `negligible`.
    pub min_effect: f64,
    /// False discovery rate across one comparison's latency tests (Benjamini-Hochberg).
    pub fdr: f64,
}

/// Default [`DiffOptions::min_effect`]: 5%, below run-to-run noise of real engines.
pub const MIN_EFFECT: f64 = 0.05;

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            percentiles: vec![50.0, 90.0, 99.0],
            resamples: 1000,
            cap: 4000,
            seed: 0,
            slo: Slo::default(),
            fail_on: None,
            min_effect: MIN_EFFECT,
            fdr: 0.05,
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
    /// Benjamini-Hochberg q-value of the delta's test among all the comparison's latency
    /// tests; None without a test.
    pub q_value: Option<f64>,
    /// `better`, `worse` (q <= the FDR and |rel_delta| >= the minimum effect), `negligible`
    /// (sure, but smaller than the minimum effect), `no significant change`, or `n/a` (no test
    /// for this number).
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
    let mut percentiles = opts.percentiles.clone();
    if let Some(f) = &opts.fail_on {
        percentiles.extend(f.ranks());
    }
    ReportOptions {
        percentiles,
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

/// Everything `trace diff` shows, from one call: the runs, each run's report and the diff, so
/// that text, JSON and HTML all render from one value.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The runs, loaded with ids, in the order given (the first is the baseline).
    pub runs: Vec<RunData>,
    /// Each run's own report.
    pub reports: Vec<Report>,
    /// Each later run against the first.
    pub diff: Diff,
}

impl Analysis {
    /// The `--fail-on` conditions that hold, as human-readable lines (empty: none holds, or no
    /// conditions were given).
    pub fn failed_conditions(&self, opts: &DiffOptions) -> Vec<String> {
        opts.fail_on
            .as_ref()
            .map_or_else(Vec::new, |f| f.check(&self.diff))
    }
}

/// Loads the runs at `paths` (each a trace file or an interrupted run's directory), reports
/// each, and compares every run after the first against the first.
pub fn analyze(paths: &[impl AsRef<Path>], opts: &DiffOptions) -> Result<Analysis> {
    let named: Vec<(&Path, Option<String>)> = paths.iter().map(|p| (p.as_ref(), None)).collect();
    analyze_named(&named, opts)
}

/// [`analyze`], each run shown under the name given with it (else its label or file stem).
pub fn analyze_named(paths: &[(&Path, Option<String>)], opts: &DiffOptions) -> Result<Analysis> {
    let mut runs = Vec::with_capacity(paths.len());
    for (p, name) in paths {
        let mut run = load_run(
            p,
            LoadOptions {
                with_ids: true,
                ..LoadOptions::default()
            },
        )?;
        run.alias = name.clone();
        runs.push(run);
    }
    let reports = reports(&mut runs, opts);
    let diff = compare(&runs, &reports, opts)?;
    Ok(Analysis {
        runs,
        reports,
        diff,
    })
}

fn compare_two(
    a: &RunData,
    ra: &Report,
    b: &RunData,
    rb: &Report,
    ps: &[f64],
    opts: &DiffOptions,
) -> Result<Comparison> {
    let (stage_idx, mut notes) = pairing::stage_pairs(a, b)?;
    let (pairing, pairs) = pairing::choose_pairing(a, b, &stage_idx);
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
    let mut boot = Bootstrap::new(opts.resamples, opts.cap, opts.seed);
    let mut stages = Vec::new();
    for (k, &(i, j)) in stage_idx.iter().enumerate() {
        stages.push(stage::stage_diff(
            &a.stages[i],
            &ra.stages[i],
            &b.stages[j],
            &rb.stages[j],
            &pairs[k],
            ps,
            &mut boot,
        ));
    }
    control_fdr(&mut stages, opts);
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

/// Turns the latency CIs' p-values into verdicts for the whole comparison at once: with ~20
/// tests a stage, testing each at 5% calls about one change per stage out of pure noise. The
/// q-values control the false discovery rate across every stage; a discovery is then called
/// better or worse only if it is also at least the minimum effect.
fn control_fdr(stages: &mut [StageDiff], opts: &DiffOptions) {
    let tested: Vec<(usize, usize)> = stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.ci.is_some())
                .map(move |(j, _)| (i, j))
        })
        .collect();
    let p: Vec<f64> = tested
        .iter()
        .map(|&(i, j)| stages[i].metrics[j].ci.map_or(1.0, |c| c.p_value))
        .collect();
    let q = trace_stats::benjamini_hochberg(&p);
    for (&(i, j), q) in tested.iter().zip(q) {
        let m = &mut stages[i].metrics[j];
        m.q_value = Some(q);
        let sure = q <= opts.fdr && m.ci.is_some_and(|c| c.low > 0.0 || c.high < 0.0);
        let big = m.rel_delta.is_some_and(|r| r.abs() >= opts.min_effect);
        m.verdict = match (sure, big, m.delta.unwrap_or(0.0) < 0.0) {
            (false, _, _) => "no significant change",
            (true, false, _) => "negligible",
            (true, true, true) => "better",
            (true, true, false) => "worse",
        };
    }
}
