//! Writes N synthetic requests (16 chunks each) through `spawn_writer` to show that the writer's
//! memory stays flat whatever the run length. Measure with `/usr/bin/time -v`:
//!
//! ```sh
//! cargo build --release -p trace-format --example write_many
//! /usr/bin/time -v target/release/examples/write_many /tmp/many.parquet 10000000
//! ```

use std::time::Instant;

use trace_format::{TraceMeta, TraceRecord, WriterOptions, spawn_writer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: write_many OUT.parquet N")?;
    let n: u64 = args
        .next()
        .ok_or("usage: write_many OUT.parquet N")?
        .parse()?;
    let start = Instant::now();
    let (tx, handle) = spawn_writer(&out, TraceMeta::new(), WriterOptions::default())?;
    for i in 0..n {
        let t = i as i64 * 1_000_000;
        tx.send(TraceRecord {
            request_id: format!("req-{i}"),
            stage: "rate=1000".into(),
            target_rate: Some(1000.0),
            scheduled_ns: t,
            sent_ns: Some(t + 50_000),
            chunk_ns: (0..16).map(|k| t + 50_000_000 + k * 10_000_000).collect(),
            chunk_tokens: vec![1; 16],
            end_ns: Some(t + 210_000_000),
            output_tokens: Some(16),
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
