//! trace-analyze: everything `trace report` and `trace diff` compute, on polars.
//!
//! It owns the metric definitions (DESIGN.md "Metric definitions"), the per-stage tables,
//! saturation detection, the A/B comparison with bootstrap confidence intervals, and every
//! rendering of those results (text, markdown, JSON, CSV, vLLM `--save-result` JSON, HTML with
//! inline SVG). The Parquet file is the only input: rows are scanned lazily with polars (only the
//! needed columns), metadata comes from [`trace_format::TraceReader`] (footers only).
//!
//! Main entry points: [`load_run`] -> [`RunData`], [`report::build`] -> [`report::Report`],
//! [`diff::compare`] -> [`diff::Diff`], [`diff::FailOn`]. It must not depend on clap or tokio.

pub mod diff;
mod error;
pub mod html;
mod load;
pub mod report;
pub mod saturation;
pub mod stats;
pub mod vllm;

pub use error::Error;
pub use load::{LoadOptions, ReqRow, RunData, SLICE_ROWS, ServerPoint, StageData, load_run};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
