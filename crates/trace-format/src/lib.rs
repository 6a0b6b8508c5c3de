//! trace-format: the trace schema and its Parquet reader and writer.
//!
//! A trace is one Parquet file per run, one row per request (see README "Trace format"). This
//! crate owns every column name ([`col`]), the one Arrow schema ([`schema`]), the metadata keys
//! ([`meta`]), the in-memory row ([`TraceRecord`]), the crash-safe streaming writer
//! ([`TraceWriter`], [`spawn_writer`]) and the validating reader ([`TraceReader`]).
//!
//! It must not depend on tokio or polars: the Parquet file is the only contract between the
//! writer and the analyzer.

pub mod arrow_util;
mod error;
mod meta_keys;
mod reader;
mod record;
mod schema;
mod writer;

pub use error::Error;
pub use meta_keys::{ServerSample, StageInfo, TraceMeta, meta};
pub use reader::{TraceReader, read_all};
pub use record::{TraceRecord, batch_to_records, records_to_batch};
pub use schema::{SCHEMA_VERSION, col, schema};
pub use writer::{
    RecordSender, TraceWriter, WriterHandle, WriterOptions, WriterStats, merge_parts, partial_dir,
    spawn_writer,
};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
