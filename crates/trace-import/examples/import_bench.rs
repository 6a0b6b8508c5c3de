//! Import throughput benchmark (docs/benchmarks.md, "Import"): generates an Azure-2024-style
//! CSV and imports it, printing rows/s and the process's peak RSS.
//!
//! ```text
//! cargo run --release -p trace-import --example import_bench -- gen /tmp/azure10m.csv 10000000
//! cargo run --release -p trace-import --example import_bench -- import /tmp/azure10m.csv /tmp/azure10m.parquet
//! ```
//! Run the two steps as separate processes so the peak RSS is the import's alone.

use std::io::{BufWriter, Write};
use std::time::Instant;

use trace_import::{Format, ImportConfig, import};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn generate(path: &str, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(w, "TIMESTAMP,ContextTokens,GeneratedTokens")?;
    // A week at ~16 req/s like the 2024 code trace: 2024-05-10 00:00:00 UTC plus a
    // deterministic jittered gap; the fraction is dropped on whole seconds, as upstream.
    let start_s: i64 = 1_715_299_200;
    let mut t_us: i64 = 0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t_us += (x % 120_000) as i64;
        let s = start_s + t_us / 1_000_000;
        let us = t_us % 1_000_000;
        let days = s / 86_400;
        let sod = s % 86_400;
        // 2024-05-10 is day 19853 since the epoch; the trace stays within May.
        let day = 10 + (days - 19_853);
        let (h, m, sec) = (sod / 3600, sod % 3600 / 60, sod % 60);
        let prompt = 100 + x % 8000;
        let output = 1 + (x >> 20) % 700;
        if us == 0 {
            writeln!(
                w,
                "2024-05-{day:02} {h:02}:{m:02}:{sec:02}+00:00,{prompt},{output}"
            )?;
        } else {
            writeln!(
                w,
                "2024-05-{day:02} {h:02}:{m:02}:{sec:02}.{us:06}+00:00,{prompt},{output}"
            )?;
        }
    }
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") if args.len() == 4 => {
            let rows: u64 = args[3].parse()?;
            let t = Instant::now();
            generate(&args[2], rows)?;
            let bytes = std::fs::metadata(&args[2])?.len();
            println!(
                "generated {rows} rows, {bytes} bytes in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        Some("import") if args.len() == 4 => {
            let _ = std::fs::remove_file(&args[3]);
            let cfg = ImportConfig::new(Format::Azure, &args[2], &args[3]);
            let t = Instant::now();
            let s = import(&cfg)?;
            let secs = t.elapsed().as_secs_f64();
            let out_bytes = std::fs::metadata(&args[3])?.len();
            println!(
                "imported {} rows in {secs:.1} s: {:.0} rows/s; output {out_bytes} bytes; peak RSS {} MiB",
                s.rows_written,
                s.rows_written as f64 / secs,
                peak_rss_kib().unwrap_or(0) / 1024
            );
        }
        _ => return Err("usage: import_bench gen OUT.csv ROWS | import IN.csv OUT.parquet".into()),
    }
    Ok(())
}
