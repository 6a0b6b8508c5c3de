//! Writes N synthetic requests (16 chunks each unless CHUNKS is given) through `spawn_writer`:
//! shows that the writer's memory stays flat whatever the run length, and makes the large runs
//! the analyzer is benchmarked on (SHIFT_MS adds to every TTFT, for a B run to diff against A).
//! Chunk times carry a deterministic jitter so the file compresses like real data, not a ramp.
//!
//! ```sh
//! cargo build --release -p trace-format --example write_many
//! /usr/bin/time -v target/release/examples/write_many /tmp/many.parquet 10000000
//! target/release/examples/write_many /tmp/trace-big/a.parquet 1000000 200      # analyzer bench
//! target/release/examples/write_many /tmp/trace-big/b.parquet 1000000 200 3
//! SHARD=1/4 target/release/examples/write_many /tmp/shards/s1.parquet 2500000   # merge bench
//! ```
//!
//! With `SHARD=k/n` the file is shard k of an n-host run (`trace.shard` metadata, request ids
//! `req-k-i`), for `trace merge`'s benchmark (scripts/bench/merge.sh).

use std::time::Instant;

use trace_format::{TraceMeta, TraceRecord, WriterOptions, spawn_writer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: write_many OUT.parquet N")?;
    let usage = "usage: write_many OUT.parquet N [CHUNKS] [SHIFT_MS]";
    let n: u64 = args.next().ok_or(usage)?.parse()?;
    let chunks: i64 = args.next().map_or(Ok(16), |a| a.parse())?;
    let shift_ms: i64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let start = Instant::now();
    let mut meta = TraceMeta::new();
    let shard = std::env::var("SHARD").ok();
    if let Some(s) = &shard {
        let (k, n) = s.split_once('/').ok_or("SHARD=k/n")?;
        let (k, n): (u32, u32) = (k.parse()?, n.parse()?);
        meta.set(
            trace_format::meta::RUN_START_UNIX_NS,
            "1800000000000000000".to_string(),
        );
        meta.set(
            trace_format::meta::SHARD,
            format!(r#"{{"index":{k},"count":{n},"schedule_id":"bench","host":"h{k}"}}"#),
        );
    }
    let prefix = shard.map_or_else(String::new, |s| format!("{}-", s.replace('/', "of")));
    let (tx, handle) = spawn_writer(&out, meta, WriterOptions::default())?;
    const MS: i64 = 1_000_000;
    for i in 0..n {
        let (t, j) = (i as i64 * MS, i as i64);
        let sent = t + 50_000 + (j % 7) * 10_000;
        let first = sent + (40 + shift_ms + j % 11) * MS;
        let chunk_ns: Vec<i64> = (0..chunks)
            .map(|k| first + k * 10 * MS + (k * 7919 + j) % MS)
            .collect();
        tx.send(TraceRecord {
            request_id: format!("req-{prefix}{i}"),
            prompt_hash: Some(i),
            stage: "rate=1000".into(),
            target_rate: Some(1000.0),
            scheduled_ns: t,
            sent_ns: Some(sent),
            end_ns: chunk_ns.last().map(|e| e + MS),
            chunk_ns,
            chunk_tokens: vec![1; chunks as usize],
            prompt_tokens: Some(128),
            output_tokens: Some(i32::try_from(chunks)?),
            status: Some(200),
            ..TraceRecord::default()
        })?;
    }
    let sent = start.elapsed();
    let stats = handle.close()?;
    println!(
        "{} rows, {} parts, sent in {:.1} s, closed (merged) after {:.1} s total",
        stats.rows,
        stats.parts,
        sent.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
