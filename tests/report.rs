//! End-to-end `trace report` on the real binary: text, JSON validated against
//! docs/report-json.md, vLLM export, HTML, the send-lag warning and error exits.

use std::collections::BTreeSet;
use std::path::Path;

use crate::fixtures::*;
use crate::util::*;
use trace_format::{TraceMeta, TraceWriter, WriterOptions, meta};

/// A two-stage sweep (stable at 5, saturated at 8) with server samples.
fn rich(dir: &Path) -> String {
    let mut recs = synthetic_stage("q", "rate=5", 5.0, 0, 100, 50.0, 0.0, 6, 10);
    recs.extend(synthetic_stage(
        "q", "rate=8", 8.0, 30_000, 160, 60.0, 300.0, 6, 10,
    ));
    recs.push(failed("f1", "rate=8", Some(8.0), 31_000));
    let path = dir.join("rich.parquet");
    let mut m = TraceMeta::new();
    m.set(meta::LABEL, "sim");
    m.set(meta::RUN_START_UNIX_NS, "1700000000000000000");
    let samples: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"t_ns":{},"waiting":{},"running":4,"kv_usage":0.5,"preemptions":null}}"#,
                i * 1_000_000_000i64,
                if i < 30 { 0 } else { (i - 30) * 2 }
            )
        })
        .collect();
    m.set(meta::SERVER_SAMPLES, format!("[{}]", samples.join(",")));
    let mut w = TraceWriter::create(&path, m, WriterOptions::default()).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    w.close().unwrap();
    path.display().to_string()
}

/// Paths documented in one section of docs/report-json.md.
pub(crate) fn documented(section: &str) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report-json.md"))
        .unwrap();
    let start = doc.find(&format!("## {section}")).unwrap();
    let rest = &doc[start + 3..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.split('`').next().map(str::to_string))
        .collect()
}

/// Every path in a JSON document, arrays as `[]`, metric names as `<metric>`, percentile keys
/// as `<pN>`.
pub(crate) fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let is_p = k.len() > 1 && k.starts_with('p') && k[1..].parse::<f64>().is_ok();
                let key = if is_p {
                    "<pN>".to_string()
                } else if prefix.ends_with("stages[].metrics") && !prefix.starts_with("comparisons")
                {
                    "<metric>".to_string()
                } else {
                    k.clone()
                };
                let p = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn text_report_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let f = rich(dir.path());
    let vj = dir.path().join("v.jsonl");
    let html = dir.path().join("r.html");
    let o = run(&[
        "report",
        &f,
        "--export",
        "vllm-json",
        vj.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = stdout(&o);
    assert!(
        t.contains("== stage rate=5 (target 5.00 req/s) : stable =="),
        "{t}"
    );
    assert!(
        t.contains("== stage rate=8 (target 8.00 req/s) : saturated =="),
        "{t}"
    );
    assert!(t.contains("Run: saturates at rate=8"), "{t}");
    assert!(t.contains("server queue slope"), "{t}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&vj)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "date",
        "duration",
        "completed",
        "failed",
        "request_throughput",
        "output_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "p99_itl_ms",
        "mean_tpot_ms",
        "p99_e2el_ms",
    ] {
        assert!(lines[1].get(key).is_some(), "vllm export lacks {key}");
    }
    assert_eq!(lines[1]["failed"], 1);
    assert_eq!(lines[0]["date"], "20231114-221320");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.matches("<svg").count() >= 6);
    assert!(!page.contains("<script"));
}

#[test]
fn json_matches_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let f = rich(dir.path());
    let o = run(&[
        "report",
        &f,
        "--format",
        "json",
        "--percentiles",
        "50,90,99,99.9",
        "--slo",
        "ttft=200ms,tpot=50ms,e2e=2s",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "trace.report/2");
    assert!(v["stages"][0]["metrics"]["ttft"]["p99.9"].is_number());
    let mut got = BTreeSet::new();
    paths(&v, "", &mut got);
    let doc = documented("Report");
    let undocumented: Vec<_> = got.difference(&doc).collect();
    let missing: Vec<_> = doc.difference(&got).collect();
    assert!(
        undocumented.is_empty(),
        "fields missing from docs/report-json.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "documented fields not emitted: {missing:?}"
    );
}

#[test]
fn csv_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let f = rich(dir.path());
    let csv = stdout(&run(&["report", &f, "--format", "csv"]));
    assert!(csv.starts_with("stage,metric,stat,value\n"));
    assert!(csv.contains("rate=5,ttft,p99,"));
    let md = stdout(&run(&["report", &f, "--format", "markdown"]));
    assert!(md.contains("| rate=8 |") && md.contains("| TTFT |"));
}

#[test]
fn send_lag_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut recs = synthetic_stage("q", "rate=5", 5.0, 0, 50, 50.0, 0.0, 4, 10);
    for (i, r) in recs.iter_mut().enumerate() {
        // 5 ms late on every fifth request: P99 5 ms > max(1 ms, 5% of 50 ms).
        if i % 5 == 0 {
            r.sent_ns = Some(r.scheduled_ns + 5 * MS);
        }
    }
    let f = write(&dir.path().join("lag.parquet"), "lag", &recs);
    let t = stdout(&run(&["report", f.to_str().unwrap()]));
    assert!(
        t.contains("warning: stage rate=5: send lag P99 is 5.000 ms"),
        "{t}"
    );
}

#[test]
fn errors_exit_2_and_name_the_problem() {
    let o = run(&["report", "/nonexistent/run.parquet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/run.parquet"));
    let o = run(&["report", "x.parquet", "--percentiles", "50,101"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'101'"));
    let o = run(&["report", "x.parquet", "--slo", "ttft=fast"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Impossible rows (end before send, unsorted chunks, chunk lists of different lengths, a time
/// of i64::MAX) are counted, named, and kept out of every figure: no negative latency.
#[test]
fn impossible_rows_are_named_and_left_out() {
    let d = tempfile::tempdir().unwrap();
    let mut recs: Vec<_> = (0..20)
        .map(|i| {
            let t = i64::from(i) * 100;
            ok(
                &format!("r{i}"),
                "s",
                Some(10.0),
                t,
                t,
                &[(t + 50, 1), (t + 60, 1)],
                t + 70,
                Some(2),
            )
        })
        .collect();
    let mut end_before_send = recs[3].clone();
    end_before_send.end_ns = Some(end_before_send.sent_ns.unwrap() - 1_000_000_000);
    end_before_send.chunk_ns.clear();
    end_before_send.chunk_tokens.clear();
    let mut unsorted = recs[4].clone();
    unsorted.chunk_ns.reverse();
    let mut mismatched = recs[5].clone();
    mismatched.chunk_tokens.push(1);
    let mut forever = recs[6].clone();
    forever.end_ns = Some(i64::MAX);
    recs.splice(3..7, [end_before_send, unsorted, mismatched, forever]);
    let f = write(&d.path().join("bad.parquet"), "bad", &recs);
    let o = run(&["report", f.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("4 rows of") && warnings.contains("the first: row 3, column end_ns"),
        "{warnings}"
    );
    let stage = &v["stages"][0];
    assert_eq!(stage["requests"], 16, "{stage}");
    for m in ["ttft", "e2e", "tpot", "itl"] {
        let min = stage["metrics"][m]["min"].as_f64().unwrap();
        assert!(min >= 0.0, "{m} min {min}");
    }
}
