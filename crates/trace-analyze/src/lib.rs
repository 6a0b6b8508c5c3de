//! trace-analyze: everything `trace report` and `trace diff` compute, on polars.
//!
//! Files, one concern each: `load` (the rows, scanned lazily with polars, only the needed
//! columns, reduced with trace-format's one metric definition, [`trace_format::derive`]),
//! [`report`] (per-stage tables), [`saturation`] (the verdict per stage and for the run),
//! [`diff`] (the A/B comparison with bootstrap confidence intervals), `render` (text, markdown
//! and CSV of both), [`html`] (self-contained pages with inline SVG) and [`vllm`] (vLLM
//! `--save-result` JSON). The Parquet file is the only input; metadata comes from
//! [`trace_format::TraceReader`] (footers only). Statistics come from trace-stats.
//!
//! Main entry points: [`load_run`] -> [`RunData`], [`report::build`] -> [`report::Report`],
//! [`diff::analyze`] -> [`diff::Analysis`] (runs, reports and [`diff::Diff`] together). It
//! depends on trace-format and trace-stats only; it must not depend on clap or tokio.

pub mod diff;
mod error;
pub mod html;
mod load;
mod render;
pub mod report;
pub mod saturation;
pub mod vllm;

pub use error::Error;
pub use load::{LoadOptions, ReqRow, RunData, SLICE_ROWS, ServerPoint, StageData, load_run};
pub use render::num;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
