//! trace-replay: everything behind `trace replay` and `trace synth` except HTTP and the command
//! line.
//!
//! Files, one concern each:
//! - [`workload`]: what each request asks for (random, ShareGPT through trace-import's reader,
//!   a trace file);
//! - [`prompts`]: synthetic prompts of exact lengths in the server's tokens (calibrated through
//!   its `/tokenize`, or a local tokenizer);
//! - [`session`]: sessions (multi-turn, agent trees): linking a trace's rows, history modes;
//! - [`schedule`]: when: one generator per [`Arrival`] process, recorded timelines, retargeting;
//! - [`synth`]: synthetic workload files (`trace synth`) from the same arrival generators;
//! - [`config`]: [`ReplayConfig`], validated, holding the client's [`trace_client::ClientConfig`];
//! - [`plan`]: the stages of a run (one per rate, a warmup), each a list of absolute offsets;
//! - [`dispatch`]: releases requests at their deadlines from one run clock (a dedicated timing
//!   thread), caps concurrency by queueing and recording the wait, drains on stop;
//! - `turns`: a session's turns on the run clock (closed-loop within it, fan-out, history);
//! - [`summary`]: fixed-size per-stage statistics for the end-of-run table;
//! - `run`: [`run`], which ties them to trace-client and the trace-format writer.
//!
//! It depends on trace-format, trace-client, trace-import (the ShareGPT reader), trace-stats and
//! trace-sys; the simulator is a dev-dependency only (the command line starts it when no URL is
//! given). It must not depend on clap or polars: trace-cli parses and renders, trace-analyze
//! analyses.

mod alarm;
pub mod config;
pub mod dispatch;
pub mod plan;
pub mod prompts;
mod run;
pub mod schedule;
pub mod session;
pub mod summary;
pub mod synth;
mod turns;
pub mod workload;

use std::path::PathBuf;

pub use config::{GpuTelemetry, ReplayConfig};
pub use plan::{DEFAULT_REQUESTS, conc_label, stage_label};
pub use run::{Summary, run};
pub use schedule::{Arrival, DailyProfile};

/// Errors of a replay or a synthesis. A failed request is never an error: it is a row.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting (rate, length, ratio...); the message names the value.
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A workload file is malformed.
    #[error("workload {}: {problem}", path.display())]
    Workload {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry or row.
        problem: String,
    },
    /// The server could not tell its models.
    #[error("cannot ask {url} for its models (give --model to skip asking)")]
    Models {
        /// The target (credentials redacted).
        url: String,
        /// Why.
        #[source]
        source: trace_client::Error,
    },
    /// The client could not be set up (URL, tokenizer, TLS...).
    #[error(transparent)]
    Client(#[from] trace_client::Error),
    /// A workload file in an external format could not be read.
    #[error(transparent)]
    Import(#[from] trace_import::Error),
    /// Reading or writing a trace failed.
    #[error(transparent)]
    Format(#[from] trace_format::Error),
}
