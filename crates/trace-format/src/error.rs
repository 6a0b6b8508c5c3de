//! The crate's error type. Every message names the file it is about; an underlying error is a
//! `source()`, never repeated in the message (`trace: {err:#}` prints the chain once).

use std::path::PathBuf;

/// What can go wrong reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read, written or renamed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not Parquet, or its footer is missing (a truncated or still-open file).
    #[error("{}: not a readable Parquet file ({reason})", path.display())]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A Parquet file without the `trace.schema_version` key: some other table.
    #[error("{}: not a trace file (no '{key}' metadata key)", path.display())]
    NotATrace {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// Written by a newer version of the format than this build reads.
    #[error(
        "{}: written with trace schema_version {found}, this build reads up to {supported}; upgrade trace", path.display()
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
    #[error("{}: column '{column}' {problem}", path.display())]
    BadColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A metadata value could not be parsed.
    #[error("{}: metadata key '{key}' {problem}", path.display())]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A Parquet-level failure while decoding or encoding.
    #[error("{}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The parquet crate's error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow-level failure while building or decoding a batch.
    #[error("{context}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The arrow crate's error.
        source: arrow_schema::ArrowError,
    },
    /// An interrupted run's `.partial` directory is where a new run would write.
    #[error(
        "{}: an interrupted run's data is here; recover it (`trace recover {}`) or remove it",
        path.display(),
        path.display()
    )]
    Interrupted {
        /// The `.partial` directory.
        path: PathBuf,
    },
    /// The file's contents are damaged: a decoder gave up on them.
    #[error("{}: corrupt ({reason})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A live process is writing this run now.
    #[error("{}: a run is being written here now (by {holder}); wait for it to finish", path.display())]
    Busy {
        /// The `.partial` directory.
        path: PathBuf,
        /// Who holds the writer lock, as it recorded itself (`pid N`).
        holder: String,
    },
    /// The output exists and replacing it was not asked for.
    #[error("{}: already exists; choose another output or pass --force to replace it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A directory with no trace part files: not a run (or one that wrote nothing).
    #[error("{}: no trace part files (part-NNNNN.parquet) here: not an interrupted run", path.display())]
    NoParts {
        /// The directory.
        path: PathBuf,
    },
    /// Parts of more than one run in one `.partial` directory.
    #[error("{}: parts of different runs ({first} and {other} disagree on {key}); refusing to merge them as one", path.display())]
    MixedRuns {
        /// The directory.
        path: PathBuf,
        /// A part of the first run.
        first: String,
        /// A part that disagrees.
        other: String,
        /// The metadata key they disagree on.
        key: &'static str,
    },
    /// The writer thread is gone (it failed earlier, or the handle was closed).
    #[error("trace writer for {} stopped: {reason}", path.display())]
    WriterGone {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
