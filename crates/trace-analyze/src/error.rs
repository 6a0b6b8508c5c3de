//! The crate's error type. Messages are lowercase and name the file, column or expression.

use std::path::PathBuf;

/// What can go wrong analysing traces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The trace could not be opened or validated.
    #[error(transparent)]
    Format(#[from] trace_format::Error),
    /// polars failed scanning or decoding the rows.
    #[error("reading rows of {path}: {source}")]
    Polars {
        /// The trace.
        path: PathBuf,
        /// polars' error.
        source: polars::error::PolarsError,
    },
    /// A column had an unexpected type or shape.
    #[error("{path}: column '{column}' {problem}")]
    BadColumn {
        /// The trace.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// Two runs cannot be compared (no common stages, ...); the message says why.
    #[error("cannot compare {a} and {b}: {reason}")]
    NotComparable {
        /// First run.
        a: String,
        /// Second run.
        b: String,
        /// Why.
        reason: String,
    },
    /// A `--fail-on` expression could not be parsed.
    #[error("invalid --fail-on condition '{part}': {reason}")]
    BadCondition {
        /// The offending part of the expression.
        part: String,
        /// Why.
        reason: String,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
