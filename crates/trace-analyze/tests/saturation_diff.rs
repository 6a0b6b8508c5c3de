//! Saturation on a stable and an unstable synthetic stage; diff verdicts, pairing, headline,
//! `--fail-on` evaluation; snapshots of the text renderings.

use crate::common::*;
use trace_analyze::diff::{self, DiffOptions, FailOn};
use trace_analyze::report::{ReportOptions, build};
use trace_analyze::saturation::Verdict;
use trace_analyze::{LoadOptions, load_run};

fn sweep(
    dir: &std::path::Path,
    name: &str,
    prefix: &str,
    ttft_shift: f64,
    saturate_at_8: bool,
) -> std::path::PathBuf {
    let mut recs = synthetic_stage(prefix, "rate=5", 5.0, 0, 150, 50.0 + ttft_shift, 0.0, 8, 10);
    let growth = if saturate_at_8 { 400.0 } else { 0.0 };
    recs.extend(synthetic_stage(
        prefix,
        "rate=8",
        8.0,
        40_000,
        240,
        60.0 + ttft_shift,
        growth,
        8,
        10,
    ));
    write(&dir.join(name), name, &recs)
}

#[test]
fn stable_and_saturated_stages() {
    let dir = tempfile::tempdir().unwrap();
    let p = sweep(dir.path(), "a.parquet", "q", 0.0, true);
    let mut run = load_run(&p, LoadOptions::default()).unwrap();
    let rep = build(&mut run, &ReportOptions::default());
    let (s5, s8) = (&rep.stages[0].saturation, &rep.stages[1].saturation);
    assert_eq!(s5.verdict, Verdict::Stable);
    assert!(!s5.ttft.unwrap().slope.significant_up());
    assert_eq!(s8.verdict, Verdict::Saturated);
    let ttft = s8.ttft.unwrap();
    assert!((ttft.slope.slope - 0.4).abs() < 0.01, "{ttft:?}");
    assert!(ttft.mann_kendall.unwrap().z > 5.0);
    assert!(s8.backlog_slope.unwrap().significant_up());
    // Completions in the window run at mu = lambda / (1 + s) = 8 / 1.4 (the fluid model).
    assert!(
        (s8.capacity_estimate.unwrap() - 8.0 / 1.4).abs() < 0.15,
        "{s8:?}"
    );
    assert_eq!(rep.saturation.saturated_stage.as_deref(), Some("rate=8"));
    assert_eq!(rep.saturation.saturation_rate, Some(8.0));
    assert_eq!(rep.saturation.best_stable_stage.as_deref(), Some("rate=5"));
}

#[test]
fn diff_verdicts_pairing_and_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = sweep(dir.path(), "a.parquet", "q", 0.0, true);
    // B: same requests (same ids and prompts), 20 ms slower TTFT, stable at rate 8.
    let b = sweep(dir.path(), "b.parquet", "q", 20.0, false);
    let mut runs: Vec<_> = [&a, &b]
        .iter()
        .map(|p| {
            load_run(
                p,
                LoadOptions {
                    with_ids: true,
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let opts = DiffOptions {
        resamples: 200,
        ..Default::default()
    };
    let reports = diff::reports(&mut runs, &opts);
    let d = diff::compare(&runs, &reports, &opts).unwrap();
    let c = &d.comparisons[0];
    assert_eq!(c.pairing.mode, "request_id");
    assert_eq!(c.pairing.pairs, 390);
    let s5 = &c.stages[0];
    let ttft = s5.get("ttft", "p50").unwrap();
    assert!((ttft.delta.unwrap() - 20.0).abs() < 1e-9);
    assert_eq!(ttft.verdict, "worse");
    let ci = ttft.ci.unwrap();
    assert!(ci.low <= 20.0 && ci.high >= 20.0 && ci.low > 0.0, "{ci:?}");
    assert_eq!(
        s5.get("itl", "p50").unwrap().verdict,
        "no significant change"
    );
    assert_eq!(
        s5.get("failure_rate", "value").unwrap().verdict,
        "no significant change"
    );
    assert!(
        c.headline.starts_with(
            "b.parquet does not saturate in the tested range (a.parquet saturates at rate 8) and is 38% slower at P90 TTFT at rate=5"
        ),
        "{}",
        c.headline
    );
    assert!(
        c.headline.contains("slower at P90 TTFT at rate=5"),
        "{}",
        c.headline
    );

    assert!(FailOn::parse("ttft.p50>+10%").unwrap().check(&d).len() == 1);
    assert!(FailOn::parse("ttft.p50>+50%").unwrap().check(&d).is_empty());
    assert!(!FailOn::parse("ttft.p50>15ms").unwrap().check(&d).is_empty());
    assert!(
        FailOn::parse("throughput<-5%")
            .unwrap()
            .check(&d)
            .is_empty()
    );

    // The same comparison, reversed: B's improvement shows as "better".
    runs.reverse();
    let reports = diff::reports(&mut runs, &opts);
    let d = diff::compare(&runs, &reports, &opts).unwrap();
    assert_eq!(
        d.comparisons[0].stages[0]
            .get("ttft", "p90")
            .unwrap()
            .verdict,
        "better"
    );
    // Too few requests beyond a P99 to bound it: no interval, no verdict.
    let p99 = d.comparisons[0].stages[0].get("ttft", "p99").unwrap();
    assert_eq!((p99.ci, p99.verdict), (None, "n/a"));
    assert!(
        d.comparisons[0]
            .headline
            .starts_with("a.parquet saturates at rate 8 (b.parquet does not)")
    );
}

#[test]
fn unpaired_and_incomparable_runs_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let a = sweep(dir.path(), "a.parquet", "q", 0.0, false);
    let b = write(
        &dir.path().join("other.parquet"),
        "other",
        &synthetic_stage("z", "rate=5", 5.0, 0, 100, 50.0, 0.0, 4, 10),
    );
    let c = write(
        &dir.path().join("c.parquet"),
        "c",
        &synthetic_stage("z", "rate=3", 3.0, 0, 50, 50.0, 0.0, 4, 10),
    );
    let mut runs: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| {
            load_run(
                p,
                LoadOptions {
                    with_ids: true,
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let opts = DiffOptions {
        resamples: 100,
        ..Default::default()
    };
    let reports = diff::reports(&mut runs, &opts);
    let err = diff::compare(&runs, &reports, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no common stages") && err.contains("rate=3"),
        "{err}"
    );
    let d = diff::compare(&runs[..2], &reports[..2], &opts).unwrap();
    let c = &d.comparisons[0];
    assert_eq!(c.pairing.mode, "unpaired");
    assert!(
        c.pairing
            .reason
            .contains("did not replay the same workload"),
        "{}",
        c.pairing.reason
    );
    assert_eq!(c.stages.len(), 1);
}

#[test]
fn text_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let a = sweep(dir.path(), "a.parquet", "q", 0.0, true);
    let b = sweep(dir.path(), "b.parquet", "q", 20.0, false);
    let mut runs: Vec<_> = [&a, &b]
        .iter()
        .map(|p| {
            load_run(
                p,
                LoadOptions {
                    with_ids: true,
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let opts = DiffOptions {
        resamples: 200,
        ..Default::default()
    };
    let reports = diff::reports(&mut runs, &opts);
    let d = diff::compare(&runs, &reports, &opts).unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"/[^ ]*/([ab]\.parquet)", "[TMP]/$1");
    settings.bind(|| {
        insta::assert_snapshot!("report_text", reports[0].to_text());
        insta::assert_snapshot!("diff_text", d.to_text());
    });
}
