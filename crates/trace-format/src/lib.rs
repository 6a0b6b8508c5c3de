//! trace-format: the trace schema and its Parquet reader and writer.
//!
//! A trace is one Parquet file per run, one row per request (see README "Trace format"). This
//! crate owns every column name ([`col`]), the one Arrow schema ([`schema`]), the metadata keys
//! ([`meta`]) and their typed values ([`StageInfo`], [`ServerSample`], [`ScheduleMeta`] with
//! the one [`Arrival`] type, [`ClientMeta`]), the in-memory row ([`TraceRecord`]), the stable
//! error codes ([`ErrorKind`]), the per-request metric definitions ([`derive`]), the crash-safe
//! streaming writer ([`TraceWriter`], [`spawn_writer`]) and the validating reader
//! ([`TraceReader`]).
//!
//! It must not depend on tokio or polars: the Parquet file is the only contract between the
//! writer and the analyzer.

pub mod arrow_util;
pub mod derive;
mod error;
mod error_kind;
mod guard;
mod json_path;
mod meta_keys;
mod printable;
mod reader;
mod record;
mod schema;
mod writer;

pub use error::Error;
pub use error_kind::ErrorKind;
pub use guard::guarded;
pub use json_path::json_at;
pub use meta_keys::{
    Arrival, ClientMeta, DailyProfile, GpuReading, GpuSample, ScheduleMeta, ServerSample,
    StageInfo, TraceMeta, meta, to_json,
};
pub use printable::{printable, printable_text};
pub use reader::{TraceReader, read_all};
pub use record::{TraceRecord, batch_to_records, conform, records_to_batch};
pub use schema::{SCHEMA_VERSION, col, schema};
pub use writer::{
    RecordSender, Recovered, TraceWriter, WriterHandle, WriterOptions, WriterStats, live_writer,
    partial_dir, recover, spawn_writer,
};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
