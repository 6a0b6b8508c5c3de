//! The way out: a trace written as Mooncake JSONL, the interchange format SGLang, AIPerf,
//! Dynamo and vLLM's timed-trace loader read. `timestamp` is in ms from `scheduled_ns`;
//! `request_id`, `model` and `parent_id` are added when present (readers ignore unknown keys).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};
use trace_format::TraceReader;

use crate::error::{Error, Result};

/// What [`export_mooncake`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Lines written.
    pub rows: u64,
    /// Rows without a prompt length, left out.
    pub skipped: u64,
}

/// Writes `trace` as Mooncake JSONL to `out`, one line per row with a prompt length.
pub fn export_mooncake(trace: &Path, out: &Path) -> Result<ExportSummary> {
    let reader = TraceReader::open(trace)?;
    let io = |source| Error::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(File::create(out).map_err(io)?);
    let mut summary = ExportSummary {
        rows: 0,
        skipped: 0,
    };
    for rec in reader.records() {
        let rec = rec?;
        let Some(input) = rec.prompt_tokens else {
            summary.skipped += 1;
            continue;
        };
        let mut o = Map::new();
        // Whole milliseconds stay integers, as in the Mooncake files.
        let ts = if rec.scheduled_ns % 1_000_000 == 0 {
            json!(rec.scheduled_ns / 1_000_000)
        } else {
            json!(rec.scheduled_ns as f64 / 1e6)
        };
        o.insert("timestamp".into(), ts);
        o.insert("input_length".into(), json!(input));
        o.insert(
            "output_length".into(),
            json!(rec.max_tokens.or(rec.output_tokens).unwrap_or(0)),
        );
        o.insert("hash_ids".into(), json!(rec.hash_ids));
        o.insert("request_id".into(), json!(rec.request_id));
        if let Some(m) = rec.model {
            o.insert("model".into(), json!(m));
        }
        if let Some(p) = rec.parent_id {
            o.insert("parent_id".into(), json!(p));
        }
        serde_json::to_writer(&mut w, &Value::Object(o)).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        summary.rows += 1;
    }
    w.flush().map_err(io)?;
    Ok(summary)
}
