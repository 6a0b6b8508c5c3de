//! Ignored benchmark and fixture tests (run by hand; figures go to docs/benchmarks.md):
//!
//! - `regen_fixtures`: rewrites traces/analyze_fixture.parquet (the notebook's input).
//! - `big_generate`: writes two synthetic runs of BIG_ROWS (default 1,000,000) requests x 200
//!   chunks to BIG_DIR (default /tmp/trace-big).
//! - `big_read_only`: polars merely reading the columns the analyzer needs (the baseline).
//! - `big_report` / `big_diff`: the analyzer on them.
//!
//! `cargo test --release -p trace-analyze --test big -- --ignored --nocapture big_report`, under
//! `/usr/bin/time -v` for peak memory.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use polars::prelude::*;
use trace_analyze::diff::{self, DiffOptions};
use trace_analyze::report::{ReportOptions, build};
use trace_analyze::{LoadOptions, load_run};
use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions, col, meta};

fn big_dir() -> PathBuf {
    PathBuf::from(std::env::var("BIG_DIR").unwrap_or_else(|_| "/tmp/trace-big".into()))
}

fn big_rows() -> usize {
    std::env::var("BIG_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[test]
#[ignore = "rewrites the committed fixture"]
fn regen_fixtures() {
    // Three stages: stable at 2 and 4 req/s, saturated at 8; multi-token and role-only events
    // and a few failures, so the notebook's cross-check covers every definition.
    let mut recs: Vec<TraceRecord> = Vec::new();
    recs.extend(synthetic_stage("a", "rate=2", 2.0, 0, 60, 40.0, 0.0, 12, 9));
    recs.extend(synthetic_stage(
        "b", "rate=4", 4.0, 31_000, 120, 45.0, 0.0, 12, 9,
    ));
    recs.extend(synthetic_stage(
        "c", "rate=8", 8.0, 62_000, 240, 50.0, 250.0, 12, 9,
    ));
    for (i, r) in recs.iter_mut().enumerate() {
        if i % 7 == 0 {
            // A role-only opening event before the first token.
            let t = r.sent_ns.unwrap_or(r.scheduled_ns) + 2 * MS;
            r.chunk_ns.insert(0, t);
            r.chunk_tokens.insert(0, 0);
        }
        if i % 5 == 0 && r.chunk_tokens.len() > 4 {
            // Bundle two events into one 2-token event (speculative decoding style).
            r.chunk_ns.remove(3);
            r.chunk_tokens.remove(3);
            r.chunk_tokens[3] = 2;
        }
        if i % 3 == 0 {
            r.sent_ns = r.sent_ns.map(|s| s + (i as i64 % 4) * 100_000);
        }
        r.prompt_tokens = Some(100 + (i as i32 % 50));
    }
    recs.push(failed("f0", "rate=4", Some(4.0), 40_000));
    recs.push(failed("f1", "rate=8", Some(8.0), 70_000));
    let out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../traces/analyze_fixture.parquet"
    ));
    let mut m = TraceMeta::new();
    m.set(meta::LABEL, "analyze-fixture");
    m.set(meta::RUN_START_UNIX_NS, "1700000000000000000");
    m.set(
        meta::SOURCE,
        r#"{"format":"synthetic","by":"trace-analyze tests/big.rs regen_fixtures"}"#,
    );
    let mut w = TraceWriter::create(&out, m, WriterOptions::default()).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    w.close().unwrap();
}

#[test]
#[ignore = "writes two multi-GB traces"]
fn big_generate() {
    let dir = big_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let n = big_rows();
    for (name, shift) in [("a.parquet", 0i64), ("b.parquet", 3)] {
        let t = Instant::now();
        let mut m = TraceMeta::new();
        m.set(meta::LABEL, name.trim_end_matches(".parquet"));
        let mut w = TraceWriter::create(dir.join(name), m, WriterOptions::default()).unwrap();
        let mut rec = TraceRecord {
            stage: "rate=1000".into(),
            target_rate: Some(1000.0),
            ..Default::default()
        };
        for i in 0..n {
            let sched = i as i64 * MS;
            let sent = sched + 50_000 + (i as i64 % 7) * 10_000;
            let first = sent + (40 + shift + (i as i64 % 11)) * MS;
            rec.request_id = format!("r{i}");
            rec.prompt_hash = Some(i as u64);
            rec.scheduled_ns = sched;
            rec.sent_ns = Some(sent);
            rec.chunk_ns.clear();
            rec.chunk_tokens.clear();
            for k in 0..200i64 {
                rec.chunk_ns
                    .push(first + k * 10 * MS + (k * 7919 + i as i64) % 1_000_000);
                rec.chunk_tokens.push(1);
            }
            rec.end_ns = rec.chunk_ns.last().map(|e| e + MS);
            rec.prompt_tokens = Some(128);
            rec.output_tokens = Some(200);
            w.write(&rec).unwrap();
        }
        w.close().unwrap();
        eprintln!(
            "generated {} ({n} rows) in {:.1}s",
            name,
            t.elapsed().as_secs_f64()
        );
    }
}

#[test]
#[ignore = "needs big_generate's output"]
fn big_read_only() {
    let t = Instant::now();
    let p = PlRefPath::try_from_path(&big_dir().join("a.parquet")).unwrap();
    let cols = [
        col::STAGE,
        col::TARGET_RATE,
        col::SCHEDULED_NS,
        col::SENT_NS,
        col::END_NS,
        col::CHUNK_NS,
        col::CHUNK_TOKENS,
        col::PROMPT_TOKENS,
        col::OUTPUT_TOKENS,
        col::ERROR_KIND,
    ];
    let df = LazyFrame::scan_parquet(p, ScanArgsParquet::default())
        .unwrap()
        .select(
            cols.iter()
                .map(|c| polars::prelude::col(*c))
                .collect::<Vec<_>>(),
        )
        .collect()
        .unwrap();
    eprintln!(
        "polars read of {} rows: {:.2}s",
        df.height(),
        t.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs big_generate's output"]
fn big_report() {
    let t = Instant::now();
    let mut run = load_run(&big_dir().join("a.parquet"), LoadOptions::default()).unwrap();
    let loaded = t.elapsed().as_secs_f64();
    let rep = build(&mut run, &ReportOptions::default());
    let text = rep.to_text();
    eprintln!(
        "report: load {loaded:.2}s, total {:.2}s\n{text}",
        t.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs big_generate's output"]
fn big_diff() {
    let t = Instant::now();
    let mut runs: Vec<_> = ["a.parquet", "b.parquet"]
        .iter()
        .map(|f| {
            load_run(
                &big_dir().join(f),
                LoadOptions {
                    with_ids: true,
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let loaded = t.elapsed().as_secs_f64();
    let opts = DiffOptions::default();
    let reports = diff::reports(&mut runs, &opts);
    let d = diff::compare(&runs, &reports, &opts).unwrap();
    eprintln!(
        "diff: load {loaded:.2}s, total {:.2}s\n{}",
        t.elapsed().as_secs_f64(),
        d.to_text()
    );
}
