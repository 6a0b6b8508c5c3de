//! Helpers every module of the end-to-end tests shares: the real `trace` binary, run with or
//! without a working directory or as a long-lived child ([`spawn`]), and the repository root
//! (for committed fixtures).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

/// A child `trace` process, killed on drop if still running.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `trace ARGS` and waits for the stderr line holding `marker` followed by
/// `http://ADDR` or `https://ADDR`.
pub fn spawn(args: &[&str], marker: &str) -> Proc {
    let child = trace()
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Owned by a Proc at once, so every path (a panic included) kills and waits for it.
    let mut p = Proc {
        child,
        addr: String::new(),
    };
    let mut err = BufReader::new(p.child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "trace {args:?} exited before listening"
        );
        if let Some(i) = line.find(marker) {
            let rest = &line[i + marker.len()..];
            let start = rest.find("://").unwrap() + "://".len();
            p.addr = rest[start..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = err.read_to_string(&mut sink);
            });
            return p;
        }
    }
}

/// True when python3 imports `modules`; false (after saying what is skipped) when it does not,
/// unless `TRACE_REQUIRE_PYTHON` is set (CI, which installs them): then a failure.
pub fn python_has(modules: &str, what: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("TRACE_REQUIRE_PYTHON").is_none(),
        "TRACE_REQUIRE_PYTHON is set but python3 lacks {modules} ({what}; .ci/run installs it)"
    );
    eprintln!("skipped: python3 with {modules} not found ({what})");
    false
}
