//! `trace inspect`: what a trace file is (schema version, metadata, stages, counts), as text or
//! JSON. Reads the footer plus the two small columns it counts (stage, error_kind).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use trace_format::arrow_util::string_values;
use trace_format::{TraceReader, col, meta};

/// Output format of `trace inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// Human-readable summary.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `trace inspect`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  trace inspect traces/sample.parquet\n  \
trace inspect run.parquet --format json | jq .stages\n  \
trace inspect run.parquet.partial      # an interrupted run's flushed data")]
pub struct InspectArgs {
    /// Trace file (or an interrupted run's `.partial` directory).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
    pub format: InspectFormat,
}

/// Per-stage counts.
#[derive(Debug, Default, Serialize)]
pub struct StageCounts {
    /// Stage label.
    pub stage: String,
    /// Rows in the stage.
    pub requests: u64,
    /// Rows with an error_kind.
    pub errors: u64,
    /// Error rows by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

/// What `trace inspect --format json` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The path inspected.
    pub file: String,
    /// Format version.
    pub schema_version: Option<u32>,
    /// `run` or `workload`.
    pub kind: Option<String>,
    /// True for an interrupted run's directory.
    pub interrupted: bool,
    /// For a run still being written: its writer (`pid N`).
    pub live_writer: Option<String>,
    /// Engine label.
    pub label: Option<String>,
    /// Target URL.
    pub url: Option<String>,
    /// Wall-clock run start, RFC 3339 (UTC).
    pub run_start: Option<String>,
    /// Schedule spec (JSON, as stored).
    pub schedule: Option<serde_json::Value>,
    /// Workload spec (JSON, as stored).
    pub workload: Option<serde_json::Value>,
    /// Rows.
    pub rows: u64,
    /// Rows with an error.
    pub errors: u64,
    /// Per stage, in first-seen order.
    pub stages: Vec<StageCounts>,
    /// Server samples recorded.
    pub server_samples: usize,
    /// GPU telemetry samples recorded.
    pub gpu_samples: usize,
    /// Where the GPU samples came from.
    pub gpu_source: Option<String>,
    /// Every metadata key, raw.
    pub metadata: BTreeMap<String, String>,
}

fn json_or_string(s: Option<&str>) -> Option<serde_json::Value> {
    s.map(|s| serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.into())))
}

/// Reads a trace and summarises it.
pub fn inspect(file: &std::path::Path) -> anyhow::Result<Inspection> {
    let reader = TraceReader::open(file)?;
    let m = reader.meta();
    let mut stages: Vec<StageCounts> = Vec::new();
    let mut errors = 0;
    for batch in reader.batches_with(&[col::STAGE, col::ERROR_KIND]) {
        let batch = batch?;
        let stage = string_values(&batch, col::STAGE)?;
        let kind = string_values(&batch, col::ERROR_KIND)?;
        for (s, k) in stage.iter().zip(kind.iter()) {
            let s = s.unwrap_or_default();
            let idx = match stages.iter().position(|c| c.stage == s) {
                Some(i) => i,
                None => {
                    stages.push(StageCounts {
                        stage: s.to_string(),
                        ..Default::default()
                    });
                    stages.len() - 1
                }
            };
            let c = &mut stages[idx];
            c.requests += 1;
            if let Some(k) = k {
                c.errors += 1;
                errors += 1;
                *c.error_kinds.entry(k.to_string()).or_default() += 1;
            }
        }
    }
    let run_start = m.run_start_unix_ns().and_then(|ns| {
        chrono::DateTime::from_timestamp(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    });
    Ok(Inspection {
        file: file.display().to_string(),
        schema_version: m.schema_version(),
        kind: m.get(meta::KIND).map(str::to_string),
        interrupted: reader.is_interrupted(),
        live_writer: reader
            .is_interrupted()
            .then(|| trace_format::live_writer(file))
            .flatten(),
        label: m.get(meta::LABEL).map(str::to_string),
        // Files written before URLs were redacted may still hold credentials.
        url: m.get(meta::URL).map(trace_client::redact),
        run_start,
        schedule: json_or_string(m.get(meta::SCHEDULE)),
        workload: json_or_string(m.get(meta::WORKLOAD)),
        rows: reader.num_rows(),
        errors,
        stages,
        server_samples: m.server_samples().len(),
        gpu_samples: m.gpu_samples().len(),
        gpu_source: m.get(meta::GPU_SOURCE).map(str::to_string),
        metadata: m.as_map().clone(),
    })
}

/// The `trace.shards` list of a merged run (None for any other file).
fn shards_of(i: &Inspection) -> Option<Vec<serde_json::Value>> {
    serde_json::from_str(i.metadata.get(meta::SHARDS)?).ok()
}

/// One line per shard of a merged run: where it ran, what it sent, how late, and where its run
/// started against the earliest shard's (with the bound of its clock offset that the start
/// barrier measured, when there was one).
fn write_shards(out: &mut String, shards: &[serde_json::Value]) -> std::fmt::Result {
    use std::fmt::Write;
    let ms = |v: &serde_json::Value, scale: f64| {
        v.as_f64()
            .map_or_else(|| "-".into(), |x| format!("{:.3}", x / scale))
    };
    writeln!(out, "shards          {}", shards.len())?;
    for s in shards {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        // Files merged before the counts were kept have none.
        let num = |k: &str| s[k].as_u64().map_or_else(|| "-".into(), |v| v.to_string());
        let err = match s["offset_error_ns"].as_f64() {
            Some(e) => format!(" ± {:.3}", e / 1e6),
            None => " (host wall clock)".into(),
        };
        writeln!(
            out,
            "  {:<3} {} {} {} requests {} failed, send lag P50 {} / P99 {} ms, run start +{}{err} ms{}",
            num("index"),
            text("host"),
            text("url"),
            num("requests"),
            num("failed"),
            ms(&s["send_lag_p50_us"], 1e3),
            ms(&s["send_lag_p99_us"], 1e3),
            ms(&s["offset_ns"], 1e6),
            if s["interrupted"] == serde_json::Value::Bool(true) {
                ", interrupted"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// Runs `trace inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut i =
        inspect(&args.file).with_context(|| format!("inspecting {}", args.file.display()))?;
    i.file = crate::store::shown(&args.file);
    let mut out = String::new();
    match args.format {
        InspectFormat::Json => {
            out = serde_json::to_string_pretty(&i)?;
            out.push('\n');
        }
        InspectFormat::Text => {
            use std::fmt::Write;
            let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            writeln!(out, "file            {}", i.file)?;
            if let Some(w) = &i.live_writer {
                writeln!(
                    out,
                    "state           live run, being written now by {w} (flushed parts only)"
                )?;
            } else if i.interrupted {
                writeln!(
                    out,
                    "state           interrupted run (flushed parts only; `trace recover` merges them)"
                )?;
            }
            writeln!(
                out,
                "schema_version  {}",
                i.schema_version.map_or("-".into(), |v| v.to_string())
            )?;
            writeln!(out, "kind            {}", or(&i.kind))?;
            writeln!(out, "label           {}", or(&i.label))?;
            writeln!(out, "url             {}", or(&i.url))?;
            writeln!(out, "run start       {}", or(&i.run_start))?;
            if let Some(s) = &i.schedule {
                writeln!(out, "schedule        {s}")?;
            }
            if let Some(w) = &i.workload {
                writeln!(out, "workload        {w}")?;
            }
            writeln!(out, "rows            {}", i.rows)?;
            writeln!(out, "errors          {}", i.errors)?;
            writeln!(out, "server samples  {}", i.server_samples)?;
            if i.gpu_samples > 0 {
                writeln!(
                    out,
                    "gpu samples     {} ({})",
                    i.gpu_samples,
                    i.gpu_source.as_deref().unwrap_or("DCGM")
                )?;
            }
            if let Some(shards) = shards_of(&i) {
                write_shards(&mut out, &shards)?;
            }
            writeln!(out, "stages          {}", i.stages.len())?;
            for s in &i.stages {
                let kinds: Vec<String> = s
                    .error_kinds
                    .iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect();
                writeln!(
                    out,
                    "  {:<20} {:>8} requests {:>6} errors {}",
                    if s.stage.is_empty() {
                        "(none)"
                    } else {
                        &s.stage
                    },
                    s.requests,
                    s.errors,
                    kinds.join(" ")
                )?;
            }
        }
    }
    use std::io::Write;
    // Labels, URLs and stage names come from the file: never raw control characters (JSON
    // escapes its own).
    let out = match args.format {
        InspectFormat::Text => trace_format::printable_text(&out),
        InspectFormat::Json => std::borrow::Cow::Borrowed(out.as_str()),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
