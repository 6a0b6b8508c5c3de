//! The embedded target: when `trace replay` or `trace record` is given no server, the command
//! line starts the simulator in this process (its own thread and runtime, so the client keeps
//! its timing) and stops it when the verb is done. Libraries never start it themselves.

use anyhow::Context;
use trace_sim::{SimConfig, SimHandle};

/// Starts the default simulator profile on a free loopback port.
pub(crate) fn start() -> anyhow::Result<SimHandle> {
    trace_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into())
        .context("cannot start the embedded simulator")
}

/// Stops it, flushing what it holds; a failure is only a warning (the run's data is written).
pub(crate) fn stop(sim: SimHandle) {
    if let Err(e) = sim.shutdown() {
        tracing::warn!("embedded simulator: {e:#}");
    }
}
