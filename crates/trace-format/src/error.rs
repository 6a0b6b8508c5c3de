//! The crate's error type. Every message names the file it is about.

use std::path::PathBuf;

/// What can go wrong reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not Parquet, or its footer is missing (a truncated or still-open file).
    #[error("{path}: not a readable Parquet file ({reason})")]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A Parquet file without the `trace.schema_version` key: some other table.
    #[error("{path}: not a trace file (no '{key}' metadata key)")]
    NotATrace {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// Written by a newer version of the format than this build reads.
    #[error(
        "{path}: written with trace schema_version {found}, this build reads up to {supported}; upgrade trace"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The file's version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A required column is absent or has the wrong type.
    #[error("{path}: column '{column}' {problem}")]
    BadColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A metadata value could not be parsed.
    #[error("{path}: metadata key '{key}' {problem}")]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A Parquet-level failure while decoding or encoding.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The parquet crate's error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow-level failure while building or decoding a batch.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The arrow crate's error.
        source: arrow_schema::ArrowError,
    },
    /// The writer thread is gone (it failed earlier, or the handle was closed).
    #[error("trace writer for {path} stopped: {reason}")]
    WriterGone {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
