//! trace-replay: everything behind `trace replay` except HTTP and the command line.
//!
//! It owns arrival schedules ([`schedule`]: constant, Poisson, gamma, daily cycle, recorded,
//! retargeted), workloads ([`workload`]: random, ShareGPT, trace files), the dispatcher
//! ([`dispatch`]: absolute deadlines from one run start, a dedicated release thread, concurrency
//! caps that queue and record the wait, drain on stop), the per-stage summary ([`summary`]) and
//! the entry point [`run`] that ties them to trace-client, trace-sim and the trace-format writer.
//!
//! It must not depend on clap or polars: trace-cli parses, trace-analyze analyses.

pub mod dispatch;
pub mod progress;
pub mod record;
mod run;
pub mod schedule;
pub mod selfcheck;
pub mod summary;
pub mod workload;

use std::path::PathBuf;

pub use run::{DEFAULT_REQUESTS, ReplayConfig, Summary, raise_nofile_limit, run, stage_label};
pub use schedule::{Arrival, Constant, DailyCycle, Gamma, Poisson};

/// Errors of a replay. A failed request is never an error: it is a row.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting (rate, length, ratio...); the message names the value.
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A workload file is malformed.
    #[error("workload {path}: {problem}", path = path.display())]
    Workload {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry or row.
        problem: String,
    },
    /// The target could not be started or reached (simulator, `/v1/models`, client setup).
    #[error("{0}")]
    Target(String),
    /// Reading or writing a trace failed.
    #[error(transparent)]
    Format(#[from] trace_format::Error),
}
