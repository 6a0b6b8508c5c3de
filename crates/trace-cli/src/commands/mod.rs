//! One module per verb: its clap `XArgs` and `fn run(args) -> anyhow::Result<ExitCode>`.

pub mod coordinate;
#[cfg(feature = "analyze")]
pub mod diff;
pub mod import;
pub mod inspect;
pub mod merge;
pub mod record;
pub mod recover;
pub mod replay;
#[cfg(feature = "analyze")]
pub mod report;
#[cfg(feature = "analyze")]
mod runs;
pub mod selfcheck;
pub mod sim;
mod sim_fit;
pub mod suite;
pub mod synth;
pub mod transport;

use std::path::Path;

/// Refuses an output that is one of the inputs (the same file by device and inode, however it
/// is spelled): opening it for writing would destroy what is being read.
pub(crate) fn not_an_input(output: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    for input in inputs {
        if trace_sys::same_file(output, input) {
            anyhow::bail!(
                "{}: the output is the input {}; write somewhere else",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}
