//! The crate's error type. Input errors name the file, the line and the column (or field).

use std::fmt;
use std::path::PathBuf;

/// Where in an input file a problem sits: `file:line:column (field)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input file.
    pub path: PathBuf,
    /// 1-based line number (0 when the whole file is meant).
    pub line: u64,
    /// 1-based column (CSV field number or character column in a JSON line), when known.
    pub column: Option<u64>,
    /// The column or field name, when known.
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        if let Some(name) = &self.field {
            write!(f, " ('{name}')")?;
        }
        Ok(())
    }
}

/// What can go wrong importing or synthesising a trace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// One input row is malformed: a wrong column, a bad number or timestamp, a truncated line.
    #[error("{at}: {problem}")]
    BadRow {
        /// Where.
        at: Location,
        /// What is wrong.
        problem: String,
    },
    /// The input as a whole does not have the expected shape (a missing header column...).
    #[error("{path}: {problem}")]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The options do not make sense together (a datetime window on a relative trace...).
    #[error("{0}")]
    Config(String),
    /// Writing or reading the trace file failed.
    #[error(transparent)]
    Trace(#[from] trace_format::Error),
}

impl Error {
    /// True for a row-level problem that `--skip-bad` may skip.
    pub fn is_bad_row(&self) -> bool {
        matches!(self, Error::BadRow { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
