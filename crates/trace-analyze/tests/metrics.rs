//! Every metric on hand-built traces with known answers: multi-token events, role-only and
//! usage-only events, failed requests, single-token outputs, an all-failed (empty) stage.

use crate::common::*;
use trace_analyze::report::{ReportOptions, Slo, build};
use trace_analyze::{LoadOptions, load_run};

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("value present");
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

fn fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let s = "rate=1";
    let r = Some(1.0);
    write(
        &dir.join("known.parquet"),
        "known",
        &[
            // role-only event at 5 ms, a 2-token event, then one token: TTFT 10, TPOT 7.
            ok(
                "r0",
                s,
                r,
                0,
                1,
                &[(5, 0), (11, 1), (21, 2), (31, 1)],
                32,
                Some(4),
            ),
            // single-token output: no TPOT, no ITL.
            ok("r1", s, r, 1000, 1000, &[(1020, 1)], 1021, Some(1)),
            failed("r2", s, r, 2000),
            // usage-only final event never counts; output_tokens from the column.
            ok(
                "r3",
                s,
                r,
                3000,
                3002,
                &[(3012, 1), (3022, 1), (3030, 0)],
                3031,
                Some(2),
            ),
            failed("x0", "rate=2", Some(2.0), 4000),
        ],
    )
}

#[test]
fn known_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let mut run = load_run(&path, LoadOptions::default()).unwrap();
    let opts = ReportOptions {
        percentiles: vec![50.0, 99.0],
        slo: Slo {
            ttft_ms: Some(15.0),
            ..Default::default()
        },
    };
    let rep = build(&mut run, &opts);
    assert_eq!(rep.stages.len(), 2);
    let s = &rep.stages[0];
    assert_eq!(
        (s.stage.as_str(), s.requests, s.completed, s.failed),
        ("rate=1", 4, 3, 1)
    );
    assert_eq!((s.total_input_tokens, s.total_output_tokens), (30, 7));
    close(Some(s.duration_s), 3.031);
    close(Some(s.request_throughput), 3.0 / 3.031);
    close(Some(s.output_throughput), 7.0 / 3.031);
    let m = &s.metrics;
    assert_eq!(m.ttft.count, 3);
    close(m.ttft.mean, 40.0 / 3.0);
    close(m.ttft.median(), 10.0);
    close(m.ttft.pct(99.0), 10.0 + 0.98 * 10.0);
    close(m.ttft.min, 10.0);
    close(m.ttft.max, 20.0);
    assert_eq!(m.tpot.count, 2);
    close(m.tpot.mean, 13.0);
    close(m.e2e.mean, (31.0 + 21.0 + 29.0) / 3.0);
    close(m.e2e_from_scheduled.mean, (32.0 + 21.0 + 31.0) / 3.0);
    close(m.ttft_from_scheduled.mean, (11.0 + 20.0 + 12.0) / 3.0);
    assert_eq!(m.itl.count, 3);
    close(m.itl.mean, 10.0);
    assert_eq!(m.itl_per_token.count, 4);
    close(m.itl_per_token.mean, 7.5);
    close(m.itl_per_token.median(), 7.5);
    // send lag counts failed requests too: 1, 0, 0, 2.
    assert_eq!(m.send_lag.count, 4);
    close(m.send_lag.mean, 0.75);
    // goodput: TTFT <= 15 ms holds for r0 and r3.
    close(s.goodput, 2.0 / 3.031);
    close(s.goodput_fraction, 2.0 / 3.0);

    let e = &rep.stages[1];
    assert_eq!((e.completed, e.failed), (0, 1));
    assert_eq!(e.metrics.ttft.count, 0);
    assert_eq!(e.metrics.ttft.mean, None);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("1 of 4 requests failed"))
    );
}

#[test]
fn reads_an_interrupted_partial_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let partial = dir.path().join("cut.parquet.partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::copy(&path, partial.join("part-00000.parquet")).unwrap();
    let mut run = load_run(&partial, LoadOptions::default()).unwrap();
    assert!(run.interrupted);
    let rep = build(&mut run, &ReportOptions::default());
    assert_eq!(rep.stages[0].completed, 3);
    assert!(rep.warnings[0].contains("interrupted"));
}

#[test]
fn missing_file_names_it() {
    let e = load_run(
        std::path::Path::new("/nonexistent/x.parquet"),
        LoadOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.parquet"), "{e}");
}

#[test]
fn an_empty_trace_reports_no_stages() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("empty.parquet"), "empty", &[]);
    let mut run = load_run(&path, LoadOptions::default()).unwrap();
    let rep = build(&mut run, &ReportOptions::default());
    assert!(rep.stages.is_empty());
    assert!(rep.warnings.iter().any(|w| w.contains("no rows")));
    assert!(rep.to_text().contains("no stage could be judged"));
}

#[test]
fn slicing_the_scan_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let mut whole = load_run(
        &path,
        LoadOptions {
            with_ids: true,
            slice_rows: None,
        },
    )
    .unwrap();
    let mut sliced = load_run(
        &path,
        LoadOptions {
            with_ids: true,
            slice_rows: Some(2),
        },
    )
    .unwrap();
    // Debug strings: NaN marks undefined metrics and NaN != NaN.
    assert_eq!(
        format!("{:?}", whole.stages),
        format!("{:?}", sliced.stages)
    );
    assert_eq!(whole.stages[0].request_ids, sliced.stages[0].request_ids);
    let opts = ReportOptions::default();
    let json = |r| serde_json::to_string(&r).unwrap();
    assert_eq!(
        json(build(&mut whole, &opts)),
        json(build(&mut sliced, &opts))
    );
}
