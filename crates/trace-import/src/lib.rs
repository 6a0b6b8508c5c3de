//! trace-import: external formats in and out.
//!
//! In: the public arrival traces (Azure LLM inference 2023/2024, BurstGPT, Mooncake,
//! Alibaba Bailian/Qwen), ShareGPT conversations, and peers' per-request results (vLLM
//! `--save-result`, SGLang `bench_serving` JSONL, AIPerf `profile_export.jsonl`), each into one
//! trace file through [`import`]. Arrival traces become workloads (`trace.kind = workload`:
//! `scheduled_ns`, `prompt_tokens`, `max_tokens` = the output length, `model`, `hash_ids`);
//! results with responses become runs. Inputs are streamed row by row into
//! [`trace_format::TraceWriter`], so a 44-million-row Azure week imports in bounded memory.
//!
//! Also: [`export_mooncake`] writes a trace back out as Mooncake JSONL, the interchange format
//! other tools read; [`read_sharegpt`] is the one ShareGPT reader (trace-replay uses it for
//! `sharegpt=FILE`).
//!
//! Main types: [`ImportConfig`] -> [`import`] -> [`ImportSummary`]. It depends on trace-format
//! only; it must not depend on clap, tokio or polars.

mod array;
mod config;
mod csv_formats;
pub mod datasets;
mod error;
mod export;
mod input;
mod jsonl;
mod results;
pub mod sharegpt;
mod sink;
mod timestamp;

use serde_json::{Value, json};
use trace_format::{TraceMeta, meta};

pub use config::{Bound, Filter, FilterKey, Format, ImportConfig, ImportSummary, Window};
pub use error::{Error, Location, Result};
pub use export::{ExportSummary, export_mooncake};
pub use sharegpt::{Next, ShareGptItem, ShareGptStats, ShareGptTurn, read_sharegpt};
pub use timestamp::parse_datetime_ns;

/// The `stage` label of imported and synthetic workloads (replay sets its own).
pub const WORKLOAD_STAGE: &str = "workload";

/// `error_kind` of a row that failed in the source (BurstGPT `Response tokens` 0, a results
/// file's non-empty `errors` entry): [`trace_format::ErrorKind::SourceFailed`]'s code.
pub const SOURCE_FAILED: &str = "source_failed";

fn time_unit(format: Format) -> Option<&'static str> {
    match format {
        Format::Azure => Some("datetime"),
        Format::BurstGpt | Format::Bailian => Some("s"),
        Format::Mooncake => Some("ms"),
        Format::ShareGpt => None,
        Format::VllmJson | Format::SglangJsonl => Some("s"),
        Format::Aiperf => Some("ns"),
        Format::CopilotAgent => Some("datetime"),
    }
}

fn bound_json(b: Option<Bound>) -> Value {
    match b {
        None => Value::Null,
        Some(Bound::Offset(ns)) => json!({ "offset_ns": ns }),
        Some(Bound::Absolute(ns)) => json!({ "unix_ns": ns }),
    }
}

fn validate(cfg: &ImportConfig) -> Result<()> {
    let f = cfg.format;
    if let Some(w) = cfg.window {
        if !f.has_time() {
            return Err(Error::Config(format!("--window: {f} has no arrival times")));
        }
        if w.is_absolute() && !f.has_absolute_time() {
            return Err(Error::Config(format!(
                "--window: {f} times are relative to the trace start; use offsets (10m..20m), not datetimes"
            )));
        }
    }
    for filter in &cfg.filters {
        match filter.key {
            FilterKey::Model if matches!(f, Format::Azure | Format::Bailian | Format::ShareGpt) => {
                return Err(Error::Config(format!(
                    "--filter model=...: {f} has no model column"
                )));
            }
            FilterKey::LogType if f != Format::BurstGpt => {
                return Err(Error::Config(format!(
                    "--filter log_type=...: only burstgpt has a log type, not {f}"
                )));
            }
            _ => {}
        }
    }
    if cfg.block_size.is_some() && f.default_block_size().is_none() {
        return Err(Error::Config(format!("--block-size: {f} has no hash_ids")));
    }
    if cfg.block_size == Some(0) {
        return Err(Error::Config("--block-size must be > 0".into()));
    }
    if cfg.limit == Some(0) {
        return Err(Error::Config("--limit must be > 0".into()));
    }
    Ok(())
}

/// Imports one input file into a trace at `cfg.output`. On error the partial output is removed.
pub fn import(cfg: &ImportConfig) -> Result<ImportSummary> {
    validate(cfg)?;
    let f = cfg.format;
    if !cfg.input.is_file() {
        return Err(Error::Io {
            path: cfg.input.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let kind = match f {
        Format::VllmJson | Format::SglangJsonl | Format::Aiperf => "run",
        _ => "workload",
    };
    let mut m = TraceMeta::new();
    m.set(meta::KIND, kind);
    m.set(
        meta::WORKLOAD,
        json!({ "kind": "import", "format": f.name(), "file": cfg.input.display().to_string() })
            .to_string(),
    );
    let mut sink = sink::Sink::new(cfg, m)?;
    let read = match f {
        Format::Azure => csv_formats::import_azure(&mut sink).map(|()| Vec::new()),
        Format::BurstGpt => csv_formats::import_burstgpt(&mut sink).map(|()| Vec::new()),
        Format::Mooncake => jsonl::import_mooncake(&mut sink).map(|()| Vec::new()),
        Format::Bailian => jsonl::import_bailian(&mut sink).map(|()| Vec::new()),
        Format::Aiperf => jsonl::import_aiperf(&mut sink).map(|()| Vec::new()),
        Format::CopilotAgent => jsonl::import_copilot_agent(&mut sink).map(|()| Vec::new()),
        Format::ShareGpt => sharegpt::import_sharegpt(&mut sink).map(|()| Vec::new()),
        Format::VllmJson | Format::SglangJsonl => results::import_results(&mut sink, f),
    };
    let summaries = match read {
        Ok(s) => s,
        Err(e) => {
            sink.abort();
            return Err(e);
        }
    };
    let s = &sink.summary;
    let source = json!({
        "format": f.name(),
        "file": cfg.input.display().to_string(),
        "time_unit": time_unit(f),
        "length_unit": if f == Format::ShareGpt { "words" } else { "tokens" },
        "block_size": cfg.block_size.or(f.default_block_size()),
        "window": cfg.window.map(|w| json!({ "start": bound_json(w.start), "end": bound_json(w.end) })),
        "filters": cfg.filters.iter().map(|x| format!("{:?}={}", x.key, x.value).to_ascii_lowercase()).collect::<Vec<_>>(),
        "limit": cfg.limit,
        "origin_ns": sink.zero(),
        "rows_read": s.rows_read,
        "rows_written": s.rows_written,
        "rows_bad": s.rows_bad,
        "rows_excluded": s.rows_excluded,
        "source_failures": s.source_failures,
        "summaries": if summaries.is_empty() { Value::Null } else { Value::Array(summaries) },
    });
    sink.set_meta(meta::SOURCE, source.to_string());
    if f.has_absolute_time()
        && let Some(zero) = sink.zero()
    {
        sink.set_meta(meta::RUN_START_UNIX_NS, zero.to_string());
    }
    let mut summary = sink.finish()?;
    summary.kind = kind.to_string();
    Ok(summary)
}
