//! `trace selfcheck`: not built yet (issue 8); the arguments grow with it.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `trace selfcheck`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trace selfcheck\n  trace selfcheck --concurrency 1000 --ttft 50ms --itl 10ms --max-ttft-error 1ms\n\nNot built yet (issue 8): exits 2 with a message."
)]
pub struct SelfcheckArgs {
    /// Everything after the verb, until the verb is built.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs `trace selfcheck`.
pub fn run(_args: SelfcheckArgs) -> anyhow::Result<ExitCode> {
    crate::not_built("selfcheck", 8)
}
