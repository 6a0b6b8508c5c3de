//! Helpers every module of the end-to-end tests shares: the real `trace` binary, run with or
//! without a working directory, and the repository root (for committed fixtures).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The real `trace` binary, without a key in the environment (no test may depend on one) and
/// with default logging.
pub fn trace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trace"));
    c.env_remove("OPENAI_API_KEY").env_remove("TRACE_LOG");
    c
}

/// Runs `trace ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    trace().args(args).output().expect("trace runs")
}

/// Runs `trace ARGS` in `cwd` to completion.
pub fn run_in(args: &[&str], cwd: &Path) -> Output {
    trace()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("trace runs")
}

/// Runs `trace ARGS` in `cwd` and asserts it succeeded.
pub fn run_ok_in(args: &[&str], cwd: &Path) -> Output {
    let out = run_in(args, cwd);
    assert!(
        out.status.success(),
        "trace {args:?} failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    out
}

/// The output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}
