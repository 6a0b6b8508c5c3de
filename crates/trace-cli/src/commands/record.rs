//! `trace record`: not built yet (issue 5); the arguments grow with it.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `trace record`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trace record --listen 127.0.0.1:9000 --upstream http://127.0.0.1:8000 -o captured.parquet\n  trace record --duration 10m --store prompts -o demo.parquet\n\nNot built yet (issue 5): exits 2 with a message."
)]
pub struct RecordArgs {
    /// Everything after the verb, until the verb is built.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs `trace record`.
pub fn run(_args: RecordArgs) -> anyhow::Result<ExitCode> {
    crate::not_built("record", 5)
}
