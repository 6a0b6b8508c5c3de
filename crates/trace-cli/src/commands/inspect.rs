//! `trace inspect`: placeholder, filled in with trace-format.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `trace inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Trace file.
    pub file: std::path::PathBuf,
}

/// Runs `trace inspect`.
pub fn run(_args: InspectArgs) -> anyhow::Result<ExitCode> {
    crate::not_built("inspect", 2)
}
