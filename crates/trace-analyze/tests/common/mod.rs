//! Fixture builders shared by the analyzer's tests: hand-built records written with the real
//! TraceWriter into temp dirs.
#![allow(dead_code, unreachable_pub, clippy::too_many_arguments)]

use std::path::{Path, PathBuf};

use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions, meta};

pub const MS: i64 = 1_000_000;

/// A completed request: events at `(ms offset from run start, tokens)`.
pub fn ok(
    id: &str,
    stage: &str,
    rate: Option<f64>,
    sched_ms: i64,
    sent_ms: i64,
    events: &[(i64, i32)],
    end_ms: i64,
    out: Option<i32>,
) -> TraceRecord {
    TraceRecord {
        request_id: id.into(),
        stage: stage.into(),
        target_rate: rate,
        scheduled_ns: sched_ms * MS,
        sent_ns: Some(sent_ms * MS),
        first_byte_ns: events.first().map(|e| e.0 * MS),
        chunk_ns: events.iter().map(|e| e.0 * MS).collect(),
        chunk_tokens: events.iter().map(|e| e.1).collect(),
        end_ns: Some(end_ms * MS),
        prompt_tokens: Some(10),
        output_tokens: out,
        status: Some(200),
        prompt_hash: Some(xhash(id)),
        ..Default::default()
    }
}

pub fn failed(id: &str, stage: &str, rate: Option<f64>, sched_ms: i64) -> TraceRecord {
    TraceRecord {
        request_id: id.into(),
        stage: stage.into(),
        target_rate: rate,
        scheduled_ns: sched_ms * MS,
        sent_ns: Some(sched_ms * MS),
        end_ns: Some((sched_ms + 5) * MS),
        prompt_tokens: Some(10),
        status: Some(500),
        error_kind: Some("http_5xx".into()),
        error_msg: Some("internal error".into()),
        prompt_hash: Some(xhash(id)),
        ..Default::default()
    }
}

fn xhash(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    })
}

pub fn write(path: &Path, label: &str, recs: &[TraceRecord]) -> PathBuf {
    let mut m = TraceMeta::new();
    m.set(meta::LABEL, label);
    m.set(meta::RUN_START_UNIX_NS, "1700000000000000000");
    let mut w = TraceWriter::create(path, m, WriterOptions::default()).unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    w.close().unwrap();
    path.to_path_buf()
}

/// A deterministic stage of `n` requests at `rate` req/s: TTFT = base + growth * t (ms, t in s)
/// plus a small alternating jitter; `tokens` one-token events `itl_ms` apart.
#[allow(clippy::too_many_arguments)]
pub fn synthetic_stage(
    prefix: &str,
    stage: &str,
    rate: f64,
    start_ms: i64,
    n: usize,
    ttft_base_ms: f64,
    growth_ms_per_s: f64,
    tokens: usize,
    itl_ms: i64,
) -> Vec<TraceRecord> {
    (0..n)
        .map(|i| {
            let sched = start_ms + (i as f64 * 1000.0 / rate) as i64;
            let t = (sched - start_ms) as f64 / 1000.0;
            let jitter = [0.0, 3.0, -2.0, 1.0, -1.5][i % 5];
            let ttft = (ttft_base_ms + growth_ms_per_s * t + jitter).round() as i64;
            let first = sched + ttft;
            let events: Vec<(i64, i32)> = (0..tokens)
                .map(|k| (first + k as i64 * itl_ms, 1))
                .collect();
            let end = events.last().map_or(first, |e| e.0) + 1;
            ok(
                &format!("{prefix}{i}"),
                stage,
                Some(rate),
                sched,
                sched,
                &events,
                end,
                Some(tokens as i32),
            )
        })
        .collect()
}
