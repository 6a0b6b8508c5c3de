//! End-to-end tests of the real `trace` binary, one module per verb (ripgrep's layout: one
//! integration-test binary, shared helpers in `util`). Library behaviour is tested in each
//! crate; here the command line, its files, exit codes and messages.

#[path = "../crates/trace-analyze/tests/common/mod.rs"]
mod fixtures;
mod util;

mod deploy;
mod derive;
mod diff;
mod engine_traces;
mod errors;
mod format;
mod fuzz;
mod import;
mod llamacpp;
mod prefix_cache;
mod protocols;
mod record;
mod replay;
mod report;
mod safety;
mod saturation;
mod selfcheck;
mod sessions;
mod store;
mod suite;
mod tls;
