//! One module per verb: its clap `XArgs` and `fn run(args) -> anyhow::Result<ExitCode>`.

#[cfg(feature = "analyze")]
pub mod diff;
pub mod import;
pub mod inspect;
pub mod record;
pub mod recover;
pub mod replay;
#[cfg(feature = "analyze")]
pub mod report;
pub mod selfcheck;
pub mod sim;
mod sim_fit;
pub mod synth;
