//! The ignored test `regen_fixtures`, which rewrites traces/analyze_fixture.parquet (the
//! notebook's and analyzer tests' input). The large-run benchmark of `trace report` / `trace
//! diff` uses the real binary instead: scripts/bench/analyzer.sh, figures in docs/benchmarks.md.

use std::path::PathBuf;

use crate::common::*;
use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions, meta};

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
