//! End-to-end tests of `trace import` and `trace synth` through the real binary (issue 6):
//! an imported fixture is readable by `trace inspect`, bad input exits 2 naming
//! file:line:column, `--skip-bad` reports its count, synth reports its fit, and an imported
//! trace replays against the embedded simulator.

use std::path::Path;

use trace_format::{TraceReader, meta};

use crate::util::*;

fn ok(args: &[&str], cwd: &Path) -> String {
    stdout(&run_ok_in(args, cwd))
}

#[test]
fn import_mooncake_then_inspect() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.parquet");
    let o = out.to_str().unwrap();
    let stdout = ok(
        &[
            "import",
            "mooncake",
            "traces/import/mooncake.jsonl",
            "-o",
            o,
        ],
        &repo(),
    );
    assert!(stdout.contains("imported 12 of 12 rows"), "{stdout}");
    let r = TraceReader::open(&out).unwrap();
    assert_eq!(r.num_rows(), 12);
    assert_eq!(r.meta().get(meta::KIND), Some("workload"));
    let inspected = ok(&["inspect", o], &repo());
    assert!(inspected.contains("workload"), "{inspected}");
    let json = ok(&["inspect", o, "--format", "json"], &repo());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "workload");
}

#[test]
fn import_window_limit_filter_flags() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("b.parquet");
    let o = out.to_str().unwrap();
    let stdout = ok(
        &[
            "import",
            "burstgpt",
            "traces/import/burstgpt.csv",
            "-o",
            o,
            "--window",
            "0s..30s",
            "--filter",
            "model=ChatGPT",
            "--limit",
            "3",
        ],
        &repo(),
    );
    assert!(stdout.contains("imported 3 of"), "{stdout}");
    let recs: Vec<_> = TraceReader::open(&out)
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(recs.iter().all(|r| r.model.as_deref() == Some("ChatGPT")));
}

#[test]
fn bad_input_exits_2_naming_the_place_and_skip_bad_counts() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("bad.csv");
    std::fs::write(
        &input,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,2\n2023-11-16 18:17:0x,1,1\n2023-11-16 18:17:05.0,12,3\n",
    )
    .unwrap();
    let out = d.path().join("o.parquet");
    let res = run_in(
        &[
            "import",
            "azure",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("bad.csv:3:1 ('TIMESTAMP')") && err.contains("bad timestamp"),
        "{err}"
    );
    assert!(!out.exists());

    let stdout = ok(
        &[
            "import",
            "azure",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--skip-bad",
        ],
        d.path(),
    );
    assert!(stdout.contains("1 bad lines skipped"), "{stdout}");
    assert_eq!(TraceReader::open(&out).unwrap().num_rows(), 2);

    let res = run_in(
        &[
            "import",
            "azure",
            input.to_str().unwrap(),
            "-o",
            "x.parquet",
            "--window",
            "10m",
        ],
        d.path(),
    );
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("invalid window '10m'"));
}

#[test]
fn synth_reports_its_fit() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("azure.parquet");
    ok(
        &[
            "import",
            "azure",
            "traces/import/azure_2023.csv",
            "-o",
            src.to_str().unwrap(),
        ],
        &repo(),
    );
    let out = d.path().join("s.parquet");
    let stdout = ok(
        &[
            "synth",
            "--rate",
            "5",
            "-n",
            "200",
            "--burstiness",
            "0.5",
            "--fit",
            src.to_str().unwrap(),
            "--seed",
            "7",
            "-o",
            out.to_str().unwrap(),
        ],
        &repo(),
    );
    assert!(stdout.contains("wrote 200 requests"), "{stdout}");
    assert!(stdout.contains("fitted lognormal prompt: mu="), "{stdout}");
    let r = TraceReader::open(&out).unwrap();
    assert_eq!(r.num_rows(), 200);
    assert!(r.meta().get(meta::SCHEDULE).unwrap().contains("gamma"));
    assert_eq!(r.meta().get(meta::SEED), Some("7"));
}

#[test]
fn replay_imported_trace() {
    // Small lengths so each request is quick on the simulator; 30 rows imported, 20 replayed.
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("small.jsonl");
    let lines: String = (0..30)
        .map(|i| {
            format!(
                "{{\"timestamp\": {}, \"input_length\": {}, \"output_length\": {}, \"hash_ids\": [{i}]}}\n",
                i * 40,
                16 + i % 5,
                4 + i % 3
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let x = d.path().join("x.parquet");
    let y = d.path().join("y.parquet");
    ok(
        &[
            "import",
            "mooncake",
            input.to_str().unwrap(),
            "-o",
            x.to_str().unwrap(),
        ],
        d.path(),
    );
    ok(
        &[
            "replay",
            x.to_str().unwrap(),
            "--rate",
            "20",
            "-n",
            "20",
            "-o",
            y.to_str().unwrap(),
        ],
        d.path(),
    );
    let r = TraceReader::open(&y).unwrap();
    assert_eq!(r.num_rows(), 20);
    assert_eq!(r.meta().get(meta::KIND), Some("run"));
}
