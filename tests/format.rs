//! End-to-end tests of the trace format through the real `trace` binary and through polars:
//! `trace inspect` (text and JSON), `trace recover`, and an interrupted run read by polars.

use std::path::Path;

use crate::util::*;
use polars::prelude::*;
use trace_format::{StageInfo, TraceMeta, TraceRecord, TraceWriter, WriterOptions, meta};

fn record(i: usize, stage: &str, failed: bool) -> TraceRecord {
    TraceRecord {
        request_id: format!("req-{i}"),
        stage: stage.into(),
        target_rate: Some(5.0),
        scheduled_ns: i as i64 * 200_000_000,
        sent_ns: Some(i as i64 * 200_000_000 + 50_000),
        chunk_ns: if failed { vec![] } else { vec![1, 2, 3] },
        chunk_tokens: if failed { vec![] } else { vec![0, 1, 1] },
        error_kind: failed.then_some(trace_format::ErrorKind::Http5xx),
        ..Default::default()
    }
}

fn write_run(path: &Path) {
    let mut m = TraceMeta::new();
    m.set(meta::LABEL, "vllm");
    m.set(meta::URL, "http://127.0.0.1:8000");
    m.set(meta::RUN_START_UNIX_NS, "1763800000000000000");
    m.set(
        meta::SCHEDULE,
        r#"{"arrival":"poisson","rates":[5,8],"seed":7}"#,
    );
    m.set_stages(&[StageInfo {
        stage: "rate=5".into(),
        target_rate: Some(5.0),
        start_ns: 0,
        end_ns: Some(1),
        requests: 4,
    }]);
    let mut w = TraceWriter::create(path, m, WriterOptions::default()).unwrap();
    for i in 0..4 {
        w.write(&record(i, "rate=5", i == 3)).unwrap();
    }
    for i in 4..10 {
        w.write(&record(i, "rate=8", false)).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn inspect_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.parquet");
    write_run(&p);
    let out = trace().arg("inspect").arg(&p).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("schema_version  1"), "{text}");
    assert!(text.contains("label           vllm"), "{text}");
    assert!(
        text.contains("2025-11-22T08:26:40.000Z"),
        "wall-clock start as a date: {text}"
    );
    assert!(
        text.contains("rate=5") && text.contains("http_5xx=1"),
        "{text}"
    );

    let out = trace()
        .args(["inspect", "--format", "json"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 10);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["stages"][0]["stage"], "rate=5");
    assert_eq!(v["stages"][0]["requests"], 4);
    assert_eq!(v["stages"][1]["requests"], 6);
    assert_eq!(v["schedule"]["seed"], 7);
}

#[test]
fn inspect_bad_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bogus.parquet");
    std::fs::write(&p, b"not parquet at all").unwrap();
    let out = trace().arg("inspect").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("trace: ") && err.contains("bogus.parquet"),
        "{err}"
    );
}

#[test]
fn interrupted_run_is_readable_by_polars_and_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.parquet");
    let mut w = TraceWriter::create(&p, TraceMeta::new(), WriterOptions::default()).unwrap();
    for i in 0..5 {
        w.write(&record(i, "rate=5", false)).unwrap();
        w.rotate().unwrap(); // one part per record, as if five flush intervals passed
    }
    let partial = w.abandon().unwrap();

    let glob = format!("{}/*.parquet", partial.display());
    let df = LazyFrame::scan_parquet(PlRefPath::new(glob.as_str()), ScanArgsParquet::default())
        .unwrap()
        .select([col("request_id"), col("chunk_ns")])
        .collect()
        .unwrap();
    assert_eq!(df.height(), 5);
    let ids_ca = df.column("request_id").unwrap().str().unwrap();
    let ids: Vec<String> = (0..ids_ca.len())
        .map(|i| ids_ca.get(i).unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["req-0", "req-1", "req-2", "req-3", "req-4"]);

    let out = trace().arg("inspect").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace recover"));

    let out = trace().arg("recover").arg(&partial).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!partial.exists());
    let (_, recs) = trace_format::read_all(&p).unwrap();
    assert_eq!(recs.len(), 5);
}

#[test]
fn help_lists_every_verb_with_examples() {
    let out = trace().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    // It opens with a sentence for users, not a developer's comment.
    assert!(help.starts_with("Record, replay and compare"), "{help}");
    for verb in [
        "record",
        "replay",
        "diff",
        "report",
        "import",
        "sim",
        "inspect",
        "selfcheck",
    ] {
        assert!(
            help.contains(&format!("  {verb} ")),
            "{verb} missing from help:\n{help}"
        );
        let sub = trace().args([verb, "--help"]).output().unwrap();
        let text = String::from_utf8(sub.stdout).unwrap();
        assert!(
            text.contains("Examples:"),
            "{verb} --help has no Examples block"
        );
    }
    // A usage error is exit 2 with the message on stderr.
    let out = trace()
        .args(["inspect", "--format", "yaml", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("yaml"));
}

/// pandas/pyarrow, DuckDB and Python polars read a run `trace replay` just wrote: the same rows
/// and tokens, and the `trace.*` metadata both in pyarrow's `schema.metadata` (the Arrow schema)
/// and in DuckDB's footer view. Skipped without those modules, unless `TRACE_REQUIRE_PYTHON=1`
/// (CI, which installs them from notebooks/requirements.txt).
#[test]
fn pyarrow_duckdb_and_polars_read_the_rows_and_the_metadata() {
    if !python_has("pyarrow, duckdb, polars", "the pandas/SQL read-back") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run.parquet");
    run_ok_in(
        &[
            "replay",
            "--rate",
            "50",
            "-n",
            "30",
            "--input-len",
            "16",
            "--output-len",
            "6",
            "-o",
        ]
        .iter()
        .copied()
        .chain([out.to_str().unwrap()])
        .collect::<Vec<_>>(),
        d.path(),
    );
    let (meta, recs) = trace_format::read_all(&out).unwrap();
    let o = std::process::Command::new("python3")
        .arg(repo().join("tests/python/readback.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tokens: i64 = recs
        .iter()
        .flat_map(|r| &r.chunk_tokens)
        .map(|&t| i64::from(t))
        .sum();
    for k in ["pyarrow_rows", "duckdb_rows", "polars_rows"] {
        assert_eq!(v[k], recs.len(), "{k}: {v}");
    }
    assert_eq!(v["duckdb_tokens"], tokens, "{v}");
    assert_eq!(v["polars_tokens"], tokens, "{v}");
    let keys: Vec<String> = meta
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| k.starts_with("trace."))
        .collect();
    assert!(keys.len() >= 10, "{keys:?}");
    for k in ["pyarrow_keys", "duckdb_keys"] {
        let got: Vec<String> = serde_json::from_value(v[k].clone()).unwrap();
        for want in &keys {
            assert!(got.contains(want), "{k} lacks {want}: {v}");
        }
    }
    assert_eq!(
        v["pyarrow_schema_version"],
        trace_format::SCHEMA_VERSION.to_string()
    );
}
