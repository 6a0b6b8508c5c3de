//! trace-analyze on hand-built traces: known answers, saturation verdicts, diffs, snapshots.

mod big;
mod common;
mod metrics;
mod saturation_diff;
